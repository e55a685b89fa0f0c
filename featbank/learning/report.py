"""Per-target report of a cross-validated fit: a score table, scatter plots and a bar chart.

Scatter plots show out-of-fold predictions against the labels with the fitted 4-parameter
logistic, because PLCC is reported after that mapping; a reader should see what was correlated.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # reports are written headless, on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from featbank.learning.metrics import fit_logistic4, logistic4, score  # noqa: E402

SHOWN = ("srcc", "plcc_logistic", "plcc_poly3", "krcc", "rmse", "main_score")


def summary_table(summary: pd.DataFrame, target: str) -> pd.DataFrame:
    """Rows of one target: model, then 'median ± std' of each shown metric, best first."""
    rows = summary[summary["target"] == target]
    table = pd.DataFrame({"model": rows["model"].to_numpy()})
    for metric in (m for m in SHOWN if f"{m}_median" in summary.columns):
        med, sd = rows[f"{metric}_median"].to_numpy(), rows[f"{metric}_std"].to_numpy()
        table[metric] = [f"{m:.4f} ± {s:.4f}" if np.isfinite(s) else f"{m:.4f}" for m, s in zip(med, sd)]
    return table


def summary_text(summary: pd.DataFrame, heading: str = "") -> str:
    """One console table per target, titled ``== target<heading> ==``."""
    parts = []
    for target in summary["target"].unique():
        parts += [f"\n== {target}{heading} ==", summary_table(summary, target).to_string(index=False)]
    return "\n".join(parts)


def _scatter(ax: plt.Axes, y: np.ndarray, p: np.ndarray, title: str) -> None:
    s = score(y, p)
    ax.scatter(p, y, s=12, alpha=0.6, edgecolor="none")
    xs = np.linspace(p.min(), p.max(), 200)
    ax.plot(xs, logistic4(xs, fit_logistic4(p, y)), color="crimson", lw=1.5, label="4-param logistic")
    ax.set_xlabel("out-of-fold prediction")
    ax.set_ylabel("label")
    ax.set_title(f"{title}\nSRCC {s['srcc']:.3f}  PLCC {s['plcc_logistic']:.3f}  Main {s['main_score']:.3f}",
                 fontsize=9)
    ax.legend(fontsize=7, loc="lower right")


def plot_target(oof: pd.DataFrame, summary: pd.DataFrame, target: str, path: Path) -> Path:
    """Scatter of the best base learner and, when present, the stack (repeat 0)."""
    ranked = summary[summary["target"] == target]
    base = ranked[ranked["model"] != "stack"]["model"].iloc[0]
    models = [base] + (["stack"] if (ranked["model"] == "stack").any() else [])
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        rows = oof[(oof["target"] == target) & (oof["model"] == model) & (oof["repeat"] == 0)]
        _scatter(ax, rows["y_true"].to_numpy(), rows["y_pred"].to_numpy(), f"{target}: {model}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_bars(summary: pd.DataFrame, path: Path) -> Path:
    """MainScore (median over repeats, std as error bar) of every model for every target."""
    pivot = summary.pivot(index="target", columns="model", values="main_score_median")
    spread = summary.pivot(index="target", columns="model", values="main_score_std").fillna(0)
    ax = pivot.plot.bar(yerr=spread, figsize=(max(6, 1.2 * len(pivot) * len(pivot.columns) / 3), 4),
                        capsize=2, width=0.8)
    ax.set_ylabel("MainScore = (|SRCC| + |PLCC|) / 2")
    ax.set_ylim(max(0.0, float(np.nanmin(pivot.to_numpy())) - 0.1), 1.0)
    ax.legend(fontsize=7, ncol=2)
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=110)
    plt.close(ax.figure)
    return path


def write_report(oof: pd.DataFrame, summary: pd.DataFrame, out_dir: Path) -> Path:
    """Write report.md plus one PNG per target and a bar chart; return the markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["# featbank fit report", "",
             "Out-of-fold scores, median ± std over repeats. PLCC after the 4-parameter logistic "
             "(VQEG) and after a 3rd-order polynomial (NTIRE); MainScore = (|SRCC| + |PLCC_logistic|)/2.",
             "", f"![MainScore per model]({plot_bars(summary, out_dir / 'main_score.png').name})", ""]
    for target in summary["target"].unique():
        png = plot_target(oof, summary, target, out_dir / f"scatter_{target}.png")
        lines += [f"## {target}", "", summary_table(summary, target).to_markdown(index=False), "",
                  f"![{target}]({png.name})", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
