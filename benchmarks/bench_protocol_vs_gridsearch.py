"""The VIDEVAL protocol through featbank vs a plain scikit-learn GridSearchCV script doing the same work.

Both run the same splits on VIDEVAL's KoNViD-1k features (needs ``../shared/realdata``): per split,
min-max scaling, an inner 80/20 split (seed ``ceil(6.6 i)``), the 10 x 10 RBF-SVR grid scored by
RMSE after the 4-parameter logistic on the inner validation part, a refit on the whole training
part, and SRCC / PLCC on the test part.

(a) featbank: ``featbank.learning.engine.evaluate`` with the ``svr_grid`` learner, no stack.
(b) plain: ``Pipeline(MinMaxScaler, SVR)`` in ``GridSearchCV`` with a ``PredefinedSplit`` for the
    inner 80/20 and a ``make_scorer`` of featbank's logistic RMSE, what a user would write by hand.

Interleaved, repeated; prints the median time of each, their ratio, and checks that both chose
the same predictions (the same medians), so the time compares the same work.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import make_scorer
from sklearn.model_selection import GridSearchCV, PredefinedSplit, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.svm import SVR

from benchmarks import reference_data as videval_data
from featbank.learning.metrics import rmse, srcc
from featbank.learning.engine import evaluate
from featbank.learning.protocols import VidevalProtocol
from regressors.svr_grid import VIDEVAL_C, VIDEVAL_GAMMA

DEFAULT_REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def _featbank(X: np.ndarray, y: np.ndarray, n_splits: int) -> list[float]:
    result = evaluate({"videval": X}, y, ["mos"], ["svr_grid"], VidevalProtocol(n_splits), stack=False, n_jobs=1)
    return result.scores["srcc"].tolist()


def _plain(X: np.ndarray, y: np.ndarray, n_splits: int) -> list[float]:
    """The protocol as a hand-written scikit-learn script (NaN set to 0, as VIDEVAL's script does)."""
    X = np.where(np.isfinite(X), X, 0.0)
    scorer = make_scorer(lambda t, p: rmse(t, p), greater_is_better=False)
    out = []
    for rnd in VidevalProtocol(n_splits).rounds(len(y)):
        train, test = rnd.rows((0,), inside=False), rnd.rows((0,), inside=True)
        X_train, y_train = X[train], y[train]
        inner_fit, inner_val = train_test_split(np.arange(len(y_train)), test_size=0.2, random_state=rnd.seed)
        fold = np.full(len(y_train), -1)
        fold[inner_val] = 0
        search = GridSearchCV(
            Pipeline([("scale", MinMaxScaler()), ("svr", SVR(kernel="rbf"))]),
            {"svr__C": list(VIDEVAL_C), "svr__gamma": list(VIDEVAL_GAMMA)},
            scoring=scorer, cv=PredefinedSplit(fold), refit=True, n_jobs=1,
        )
        search.fit(X_train, y_train)
        out.append(srcc(y[test], search.predict(X[test])))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench protocol_vs_gridsearch")
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--realdata", type=Path, default=DEFAULT_REALDATA)
    args = parser.parse_args(argv)
    folder = args.realdata / "vztu+VIDEVAL" / "features"
    if not folder.is_dir():
        print(f"protocol_vs_gridsearch: skipped, no VIDEVAL features at {folder}")
        return
    X, y = videval_data.load(folder, "KONVID_1K")
    ways = {"featbank evaluate": _featbank, "plain GridSearchCV": _plain}
    times: dict[str, list[float]] = {name: [] for name in ways}
    srccs: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for name, run in ways.items():
            t0 = time.perf_counter()
            srccs[name] = run(X, y, args.splits)
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"protocol_vs_gridsearch: VIDEVAL protocol, svr grid 10x10, KoNViD-1k (n={len(y)}), "
          f"{args.splits} splits, median of {args.repeats}, one core each")
    for name, m in med.items():
        print(f"  {name:20s} {m:7.2f} s   median SRCC {np.median(srccs[name]):.4f}")
    print(f"  ratio plain / featbank:  {med['plain GridSearchCV'] / med['featbank evaluate']:.2f}x")
    gap = np.max(np.abs(np.array(srccs["featbank evaluate"]) - np.array(srccs["plain GridSearchCV"])))
    print(f"  largest per-split SRCC difference: {gap:.4f} (NaN handling: median imputation vs 0)")
