"""On-demand benchmarks (``./run.sh bench [name]``); they print medians and side-by-side ratios."""
