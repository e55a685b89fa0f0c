"""VIDEVAL's protocol on its released features: svr_grid vs the published medians, and the stack.

For each dataset (KoNViD-1k, LIVE-VQC, YouTube-UGC colour-only) runs
:func:`featbank.learning.engine.evaluate` under :class:`featbank.learning.protocols.VidevalProtocol` splits on the one
60-d ``videval`` block and prints, per model, the median (std) SRCC and PLCC over splits next to
the published SVR medians, the stack's paired gain over svr_grid (median of per-split differences,
share of splits won) and the wall time. ``--out DIR`` saves each dataset's result
(``scores.csv``, ``summary.csv``, ``splits.npz``, ...) under ``DIR/<dataset>/``.

    python -m benchmarks videval [--splits 100] [--learners svr_grid,elasticnet,lightgbm,krr,mlp]
                                 [--no-stack] [--datasets KONVID_1K,...] [--nan-to-zero] [--jobs 2]
                                 [--realdata DIR] [--out DIR] [--plain]

``--plain`` also runs, on the same splits, the plain scikit-learn script a team writes by hand
(StandardScaler + SVR, ElasticNetCV and HistGradientBoosting; a non-negative linear stack fitted
on 5-fold out-of-fold predictions of the training part; bases refitted on the whole training part)
and prints its median SRCC and time beside featbank's stack, with the ratio. Compare it with
``--learners svr,elasticnet,lightgbm``, the matching featbank learners.

Cost on one core, per split with the stack (5 inner folds): svr_grid ~10 s on KoNViD / YouTube-UGC
(the 100-pair grid), ~2.5 s on LIVE-VQC; mlp 7-10 s; lightgbm 2-3 s; elasticnet ~1 s; krr < 0.2 s.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import ElasticNetCV, LinearRegression
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

from benchmarks import reference_data as videval_data
from featbank.learning.metrics import srcc
from featbank.learning.engine import evaluate
from featbank.learning.protocols import VidevalProtocol
from featbank.learning.results import STACK, Evaluation

DEFAULT_REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def _report(dataset: str, result: Evaluation, seconds: float) -> None:
    published = videval_data.PUBLISHED[dataset]
    scores = result.scores
    print(f"\n{dataset}: {len(result.rounds)} splits, n={result.n}, {seconds:.0f} s wall")
    print(f"  published SVR       SRCC {published['srcc']:.4f} ({published['srcc_std']:.4f})  "
          f"PLCC {published['plcc']:.4f} ({published['plcc_std']:.4f})")  # fmt: skip
    for row in result.summary().itertuples():
        print(f"  {row.model:<20}SRCC {row.srcc_median:.4f} ({row.srcc_std:.4f})  "
              f"PLCC {row.plcc_logistic_median:.4f} ({row.plcc_logistic_std:.4f})")  # fmt: skip
    svr = scores[scores["model"] == "videval/svr_grid"].set_index("round")["srcc"]
    if STACK in set(scores["model"]) and len(svr):
        stack = scores[scores["model"] == STACK].set_index("round")["srcc"]
        gain = (stack - svr).to_numpy()
        print(f"  stack - svr_grid SRCC per split: median {np.median(gain):+.4f}, won {np.mean(gain > 0):.0%} of splits")
        weights = result.stack_weights[result.bases].median()
        print("  median stack weights: " + ", ".join(f"{k.split('/')[-1]} {v:.2f}" for k, v in weights.items()))


def _plain_split(X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
    """One split of the hand-written script: three bases, NNLS stack on their inner OOF predictions."""
    bases = [make_pipeline(StandardScaler(), SVR()), make_pipeline(StandardScaler(), ElasticNetCV(max_iter=10_000)),
             make_pipeline(StandardScaler(), HistGradientBoostingRegressor(random_state=0))]
    level1 = np.column_stack([cross_val_predict(b, X[train], y[train], cv=5) for b in bases])
    meta = LinearRegression(positive=True).fit(level1, y[train])
    outer = np.column_stack([b.fit(X[train], y[train]).predict(X[test]) for b in bases])
    return srcc(y[test], meta.predict(outer))


def _plain(X: np.ndarray, y: np.ndarray, result: Evaluation, jobs: int) -> tuple[float, float]:
    """Median SRCC of the plain script over ``result``'s splits, and its wall time."""
    start = time.perf_counter()
    splits = [(rnd.rows((0,), inside=False), rnd.rows((0,), inside=True)) for rnd in result.rounds]
    X = np.nan_to_num(X, nan=0.0)  # the script's NaN handling: VIDEVAL's
    values = Parallel(n_jobs=jobs)(delayed(_plain_split)(X, y, train, test) for train, test in splits)
    return float(np.median(values)), time.perf_counter() - start


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks videval", description=__doc__.split("\n")[0])
    parser.add_argument("--splits", type=int, default=100)
    parser.add_argument("--learners", default="svr_grid,elasticnet,lightgbm,krr,mlp")
    parser.add_argument("--no-stack", action="store_true")
    parser.add_argument("--datasets", default=",".join(videval_data.DATASETS))
    parser.add_argument("--nan-to-zero", action="store_true", help="VIDEVAL's NaN handling instead of median imputation")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--realdata", type=Path, default=Path(os.environ.get("FEATBANK_REALDATA", DEFAULT_REALDATA)))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plain", action="store_true", help="also run the plain scikit-learn stack script")
    args = parser.parse_args(argv)
    folder = args.realdata / "vztu+VIDEVAL" / "features"
    if not folder.is_dir():
        print(f"VIDEVAL features not found under {folder}")
        return 1
    for dataset in args.datasets.split(","):
        X, y = videval_data.load(folder, dataset, nan_to_zero=args.nan_to_zero)
        start = time.perf_counter()
        result = evaluate({"videval": X}, y, ["mos"], args.learners.split(","), VidevalProtocol(args.splits),
                          stack=not args.no_stack, n_jobs=args.jobs)  # fmt: skip
        seconds = time.perf_counter() - start
        _report(dataset, result, seconds)
        if args.plain:
            median, plain_seconds = _plain(X, y, result, args.jobs)
            stack = result.summary().set_index("model")
            mine = float(stack.loc[STACK, "srcc_median"]) if STACK in stack.index else float("nan")
            print(f"  plain script stack  SRCC {median:.4f} in {plain_seconds:.0f} s; featbank stack SRCC "
                  f"{mine:.4f} in {seconds:.0f} s ({seconds / plain_seconds:.2f}x the script's time)")
        if args.out is not None:
            result.save(args.out / dataset)
    return 0
