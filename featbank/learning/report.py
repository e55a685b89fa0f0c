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

from featbank.bank.schema import readable_names as short_keys  # noqa: E402
from featbank.learning.metrics import fit_logistic4, logistic4, score  # noqa: E402
from featbank.learning.results import STACK, Evaluation, Official  # noqa: E402

SHOWN = ("srcc", "plcc_logistic", "plcc_poly3", "krcc", "rmse", "main_score")


def readable_names(models: list[str]) -> dict[str, str]:
    """Model names with each bank key shortened (``handcrafted@5d3e…/mlp`` -> ``handcrafted/mlp``).

    Keys are shortened by :func:`featbank.bank.schema.readable_names`, which keeps as much of a
    hash as tells two configurations of one extractor apart.
    """
    def parts(model: str) -> tuple[list[str], str]:
        block, _, learner = model.rpartition("/")
        return (block.split("+") if block else []), learner

    keys = short_keys(k for m in models for k in parts(m)[0])
    return {m: ("+".join(keys[k] for k in parts(m)[0]) + "/" + parts(m)[1]) if "/" in m else m for m in models}


def _median_cells(rows: pd.DataFrame, column: str) -> list[str]:
    """'median ± std' of ``column`` per row; the median alone when every row comes from one round."""
    spread = bool((rows["rounds"] > 1).any())
    med, sd = rows[f"{column}_median"].to_numpy(), rows[f"{column}_std"].to_numpy()
    return [f"{m:.4f} ± {s:.4f}" if spread else f"{m:.4f}" for m, s in zip(med, sd, strict=True)]


def summary_table(summary: pd.DataFrame, target: str) -> pd.DataFrame:
    """Rows of one target: model, then 'median ± std' of each shown metric, best first.

    The spread is shown only when there is one (more than one round); inverted models (median
    SRCC below zero) are marked, since MainScore alone hides the sign.
    """
    rows = summary[summary["target"] == target]
    names = readable_names(list(summary["model"].unique()))
    table = pd.DataFrame({"model": [names[m] + (" (inverted)" if inv else "")
                                    for m, inv in zip(rows["model"], rows["inverted"], strict=True)]})
    for metric in (m for m in SHOWN if f"{m}_median" in summary.columns):
        table[metric] = _median_cells(rows, metric)
    return table


def official_table(official: pd.DataFrame) -> pd.DataFrame:
    """The official summary with readable model names and 'median ± std' cells (spread only over rounds)."""
    names = readable_names(list(official["model"]))
    table = pd.DataFrame({"model": official["model"].map(names)})
    for column in [c[: -len("_median")] for c in official.columns if c.endswith("_median")]:
        table[column] = _median_cells(official, column)
    for column in ("srocc", "plcc", "rank1", "rank2"):
        if column in official.columns:
            table[column] = official[column].map(lambda v: f"{v:.4f}")
    return table


def official_heading(track_name: str, score_name: str) -> str:
    return f"official score of track {track_name}: {score_name} (the organisers' formula)"


def summary_text(evaluation: Evaluation, official: Official | None = None) -> str:
    """What was run, the track's official score first when there is one, then one table per target."""
    summary = evaluation.summary()
    stat = "median ± std over rounds" if len(evaluation.rounds) > 1 else "one round"
    parts = [evaluation.describe() + "."]
    if official is not None:
        parts += [f"\n== {official_heading(official.track, official.score)} ({stat}) ==",
                  official_table(official.summary).to_string(index=False)]
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


def write_report(evaluation: Evaluation, out_dir: Path, command: str, official: Official | None = None) -> Path:
    """Write report.md plus one PNG per target and a bar chart; return the markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = evaluation.summary()
    stat = "median ± std over rounds" if len(evaluation.rounds) > 1 else "one round, no spread"
    lines = [f"# featbank {command} report", "",
             f"Run: {evaluation.describe()}.", ""]
    if official is not None:
        lines += [f"## {official_heading(official.track, official.score)}", "",
                  official_table(official.summary).to_markdown(index=False), "",
                  f"Per round and target: `official.csv`; {stat}.", ""]
    lines += [
             f"Scores on held-out predictions ({stat}). PLCC after the 4-parameter logistic (VQEG) and "
             "after a 3rd-order polynomial (NTIRE); MainScore = (|SRCC| + |PLCC_logistic|)/2. Models are "
             "ranked by the signed selection score (MainScore with the cubic PLCC, carrying the sign of "
             "SRCC), so an inverted model ranks last.",
             "", f"![MainScore per model]({plot_bars(summary, out_dir / 'main_score.png').name})", ""]
    for target in evaluation.targets:
        png = plot_target(evaluation, target, out_dir / f"scatter_{target}.png")
        lines += [f"## {target}", "", summary_table(summary, target).to_markdown(index=False), "",
                  f"![{target}]({png.name})", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
