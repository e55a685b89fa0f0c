"""Per-second regression against pooled regression on the demo data: the temporal head vs the pooled MLP.

The seeds' systems (SimpleVQA, RQ-VQA, AutoHome, QA Team) regress every second of a video and pool
the scores over time; featbank's pooled learners see one mean+std vector per video. This benchmark
synthesizes the demo's data (:mod:`featbank.demo.data`: graded blur, noise, compression, stutter,
colour and audio-noise distortions with labels they drive), extracts the demo's hand-crafted and
audio statistics, joins them on one time grid (hand-crafted 8-frame steps and audio seconds,
:mod:`featbank.bank.timeline`) and scores, under grouped k-fold by source (the same folds for
every model, one run):

* ``mlp``: the pooled MLP head on the block's mean+std vector, with its defaults, and with the
  temporal head's sizes and schedule (one hidden layer of 128, 100 epochs, batches of 32), so that
  a gain is not just a smaller network or another schedule;
* ``temporal``: the temporal head on the block's steps, mean pooling;
* ``temporal(pooling='attention')``: the same with attention pooling.

It prints, per target (``temporal`` and ``overall`` by default), the median SRCC and MainScore of
each model side by side, the difference to the pooled MLP, and the fitting time of each learner.
The demo's distortions are constant over a clip (a stuttering clip stutters throughout), so time
itself carries little extra information here; what the head gains or loses is how it weighs the
steps it is given. Run: ``./run.sh bench temporal [--sources 24 --variants 6 --folds 4x2]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from featbank.demo.data import HALO, synthesize
from featbank.demo.run import CLIP, DEMO_EXTRACTORS
from featbank.extraction.orchestrate import extract_manifest
from featbank.learning import engine
from featbank.learning.workflow import training_data

POOLED = ("mlp", "mlp(hidden=(128,), epochs=100, batch_size=32)")
HEADS = ("temporal", "temporal(pooling='attention')")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench temporal", description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=24)
    parser.add_argument("--variants", type=int, default=6)
    parser.add_argument("--folds", default="4x2", help="kfold protocol argument K[xR] (default 4x2)")
    parser.add_argument("--targets", default="temporal,overall")
    parser.add_argument("--halo", type=float, default=HALO,
                        help=f"the labels' share of the overall impression (default {HALO}, as the demo)")
    parser.add_argument("--jobs", type=int, default=-1)
    args = parser.parse_args(argv)
    targets = args.targets.split(",")
    block = "+".join(DEMO_EXTRACTORS)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        started = time.perf_counter()
        manifest = synthesize(out / "train", n_sources=args.sources, variants=args.variants, seed=0, n_jobs=args.jobs,
                              halo=args.halo, **CLIP)
        extract_manifest(manifest, out / "bank.zarr", DEMO_EXTRACTORS, progress=False)
        data = training_data(manifest, out / "bank.zarr", [block], targets, [*POOLED, *HEADS])
        prepared = time.perf_counter() - started
        (name, steps), = data.steps.items()
        print(f"demo data: {len(data.Y)} clips of {args.sources} sources, block {block}: pooled "
              f"{data.blocks[name].shape[1]}-d, steps {steps.shape[1]} x {steps.shape[2]} "
              f"(synthesis + extraction {prepared:.0f} s)")
        protocol = data.protocol(f"kfold:{args.folds}")
        rows, seconds = [], {}
        for learner in (*POOLED, *HEADS):
            started = time.perf_counter()
            evaluation = engine.evaluate(data.blocks, data.Y, targets, [learner], protocol, groups=data.groups,
                                         steps=data.steps, stack=False, n_jobs=args.jobs)
            seconds[learner] = time.perf_counter() - started
            summary = evaluation.summary()
            rows += [{"target": r.target, "learner": learner, "srcc": r.srcc_median, "main": r.main_score_median}
                     for r in summary.itertuples()]
    table = pd.DataFrame(rows)
    print(f"\ngrouped kfold:{args.folds} by source, median over rounds, same folds for every model")
    print(f"  {'target':9s} {'learner':46s} {'SRCC':>6s} {'MainScore':>9s} {'vs best pooled mlp':>18s}")
    for target in targets:
        part = table[table["target"] == target].set_index("learner")
        base = part.loc[list(POOLED), "main"].max()
        for learner in (*POOLED, *HEADS):
            gain = "" if learner in POOLED else f"{part.loc[learner, 'main'] - base:+18.3f}"
            print(f"  {target:9s} {learner:46s} {part.loc[learner, 'srcc']:6.3f} {part.loc[learner, 'main']:9.3f}"
                  f" {gain}")
    print("\nfitting time (every target, every round): "
          + ", ".join(f"{learner} {s:.0f} s" for learner, s in seconds.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
