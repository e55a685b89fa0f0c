"""Per-target report of an evaluation: what was run, a score table, scatter plots and a bar chart.

Scatter plots show held-out (out-of-fold) predictions against the labels with the fitted
4-parameter logistic, because PLCC is reported after that mapping; a reader should see what was
correlated. The scatter shows the best base model by the signed selection score, never merely
the first one listed, and the stack beside it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # reports are written headless, on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from featbank.learning.metrics import fit_logistic4, logistic4, score  # noqa: E402
from featbank.learning.results import STACK, Evaluation  # noqa: E402

SHOWN = ("srcc", "plcc_logistic", "plcc_poly3", "krcc", "rmse", "main_score")


def readable_names(models: list[str]) -> dict[str, str]:
    """Model names without bank-key hashes (``handcrafted@5d3e…/mlp`` -> ``handcrafted/mlp``).

    A hash is kept where dropping it would make two names equal (one extractor banked under two
    configurations), so a shortened name never means two models.
    """
    def short(model: str) -> str:
        if "/" not in model:
            return model
        block, learner = model.rsplit("/", 1)
        return "+".join(part.split("@")[0] for part in block.split("+")) + "/" + learner

    shortened = {m: short(m) for m in models}
    counts = pd.Series(list(shortened.values())).value_counts()
    return {m: s if counts[s] == 1 else m for m, s in shortened.items()}


def summary_table(summary: pd.DataFrame, target: str) -> pd.DataFrame:
    """Rows of one target: model, then 'median ± std' of each shown metric, best first.

    The spread is shown only when there is one (more than one round); inverted models (median
    SRCC below zero) are marked, since MainScore alone hides the sign.
    """
    rows = summary[summary["target"] == target]
    names = readable_names(list(summary["model"].unique()))
    table = pd.DataFrame({"model": [names[m] + (" (inverted)" if inv else "")
                                    for m, inv in zip(rows["model"], rows["inverted"], strict=True)]})
    spread = bool((rows["rounds"] > 1).any())
    for metric in (m for m in SHOWN if f"{m}_median" in summary.columns):
        med, sd = rows[f"{metric}_median"].to_numpy(), rows[f"{metric}_std"].to_numpy()
        table[metric] = [f"{m:.4f} ± {s:.4f}" if spread else f"{m:.4f}" for m, s in zip(med, sd, strict=True)]
    return table


def summary_text(evaluation: Evaluation) -> str:
    """What was run, then one console table per target, best first."""
    summary = evaluation.summary()
    stat = "median ± std over rounds" if len(evaluation.rounds) > 1 else "one round"
    parts = [evaluation.describe() + "."]
    for target in evaluation.targets:
        parts += [f"\n== {target} ({stat}) ==", summary_table(summary, target).to_string(index=False)]
    return "\n".join(parts)


def _scatter(ax: plt.Axes, y: np.ndarray, p: np.ndarray, title: str) -> None:
    s = score(y, p)
    ax.scatter(p, y, s=12, alpha=0.6, edgecolor="none")
    xs = np.linspace(p.min(), p.max(), 200)
    ax.plot(xs, logistic4(xs, fit_logistic4(p, y)), color="crimson", lw=1.5, label="4-param logistic")
    ax.set_xlabel("held-out prediction")
    ax.set_ylabel("label")
    ax.set_title(f"{title}\nSRCC {s['srcc']:.3f}  PLCC {s['plcc_logistic']:.3f}  Main {s['main_score']:.3f}",
                 fontsize=9)
    ax.legend(fontsize=7, loc="lower right")


def plot_target(evaluation: Evaluation, target: str, path: Path) -> Path:
    """Scatter of round 0's predictions of the best base learner and, when present, the stack."""
    models = [evaluation.best_base(target)] + ([STACK] if evaluation.stacked else [])
    names = readable_names(evaluation.bases)
    preds = evaluation.predictions
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        rows = preds[(preds["target"] == target) & (preds["model"] == model) & (preds["round"] == 0)]
        _scatter(ax, rows["y_true"].to_numpy(), rows["y_pred"].to_numpy(), f"{target}: {names.get(model, model)}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_bars(summary: pd.DataFrame, path: Path) -> Path:
    """MainScore (median over rounds, std as error bar) of every model for every target."""
    names = readable_names(list(summary["model"].unique()))
    summary = summary.assign(model=summary["model"].map(names))
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


def write_report(evaluation: Evaluation, out_dir: Path, command: str) -> Path:
    """Write report.md plus one PNG per target and a bar chart; return the markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = evaluation.summary()
    stat = "median ± std over rounds" if len(evaluation.rounds) > 1 else "one round, no spread"
    lines = [f"# featbank {command} report", "",
             f"Run: {evaluation.describe()}.", "",
             f"Scores on held-out predictions ({stat}). PLCC after the 4-parameter logistic (VQEG) and "
             "after a 3rd-order polynomial (NTIRE); MainScore = (|SRCC| + |PLCC_logistic|)/2. Models are "
             "ranked by MainScore with the sign of SRCC, so an inverted model ranks last.",
             "", f"![MainScore per model]({plot_bars(summary, out_dir / 'main_score.png').name})", ""]
    for target in evaluation.targets:
        png = plot_target(evaluation, target, out_dir / f"scatter_{target}.png")
        lines += [f"## {target}", "", summary_table(summary, target).to_markdown(index=False), "",
                  f"![{target}]({png.name})", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
