"""Fitting at deep-feature scale: cost per learner as n and d grow, and a stacked multi-target CV.

Deep VQA features are thousands of dimensions over thousands of videos (SlowFast 2304, ResNet-50
stages 7168, Q-Align 4096), where learners tuned on 60-d tabular features can be slow. Data are
synthetic and seeded: a low-rank signal (``--rank`` latent factors spread over every column) plus
noise, and nonlinear labels of the factors, one per target.

Part 1, one fit per learner and size (``--sizes N×D,...``): CPU seconds of
``make_learner(name, reduce=...)`` fitted on one target, then how the cost grows: the exponent
``log(t2 / t1) / log(n2 / n1)`` between neighbouring sizes that differ in n or in d alone.

Part 2, the job of a challenge entry (``--cv N×D``, ``--targets``, ``--folds``, ``--reduce``):
every learner on every target under grouped k-fold with an honest stack, (a) through featbank's
engine, which fits every learner and target of a block in one job (one preprocessing, PCA
included, per training part; one SVR kernel for all targets; one multi-output MLP), once per
``--stack-modes`` entry (``nested``: k + k(k-1)/2 fit sets per base; ``ring``: 2k, still honest),
next to (b) a plain scikit-learn script doing the same work: per learner and target
``cross_val_predict`` of the same pipeline (the same PCA inside it), then a non-negative linear
stack scored by cross-validation on those out-of-fold predictions. (b) is *cheaper* work than
(a)'s honest stacks (its stack weights see labels of the fold they score), so the ratio is printed
for (a)'s base fits alone too. The wall times, their ratios and the median MainScore of the stacks
are printed side by side.

The issue's target is ``--cv 6000x4096 --targets 6 --folds 5`` in 3 minutes with an honest stack:
``--reduce pca:128 --stack-modes nested,ring``. The defaults are smaller so that the benchmark
finishes in minutes on two cores.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings

import numpy as np
from joblib import Parallel, delayed
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import GroupKFold, cross_val_predict

from featbank.learning.engine import evaluate
from featbank.learning.metrics import score
from featbank.learning.protocols import parse_protocol
from regressors import make_learner

LEARNERS = ("svr", "elasticnet", "lightgbm", "mlp")


def synthetic(n: int, d: int, targets: int = 1, rank: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(n, d)`` float32 features with a rank-``rank`` signal, ``(n, targets)`` nonlinear labels on 1..5."""
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n, rank))
    X = (factors @ rng.normal(size=(rank, d)) / math.sqrt(rank) + rng.normal(size=(n, d))).astype(np.float32)
    Y = np.empty((n, targets))
    for t in range(targets):
        w = rng.normal(size=rank)
        z = factors @ w / np.linalg.norm(w)
        Y[:, t] = 3 + np.tanh(z) + 0.3 * np.sin(2 * factors[:, t % rank]) + 0.3 * rng.normal(size=n)
    return X, Y


def _size(text: str) -> tuple[int, int]:
    n, _, d = text.lower().partition("x")
    return int(n), int(d)


def one_fit_costs(sizes: list[tuple[int, int]], learners: list[str], reduce: str | None) -> None:
    print(f"part 1: CPU seconds of one fit on one target ({', '.join(f'{n}x{d}' for n, d in sizes)}), "
          f"reduce {reduce or 'none'}")
    print(f"  {'learner':11s}" + "".join(f"{f'{n}x{d}':>12s}" for n, d in sizes) + "   growth")
    for name in learners:
        costs = []
        for n, d in sizes:
            X, Y = synthetic(n, d)
            start = time.process_time()
            make_learner(name, random_state=0, reduce=reduce).fit(X, Y[:, 0])
            costs.append(time.process_time() - start)
        growth = []
        for (n1, d1), (n2, d2), t1, t2 in zip(sizes, sizes[1:], costs, costs[1:], strict=False):
            if (n1 == n2) == (d1 == d2):  # both or neither changed: no growth along one axis to show
                continue
            axis, ratio = ("n", n2 / n1) if d1 == d2 else ("d", d2 / d1)
            if t1 > 0:
                growth.append(f"{axis}^{math.log(t2 / t1) / math.log(ratio):.2f}")
        print(f"  {name:11s}" + "".join(f"{c:12.1f}" for c in costs) + "   " + " ".join(growth))


def _plain_base(X: np.ndarray, y: np.ndarray, name: str, groups: np.ndarray, folds: int,
                reduce: str | None) -> np.ndarray:
    return cross_val_predict(make_learner(name, random_state=0, reduce=reduce), X, y, groups=groups,
                             cv=GroupKFold(folds))


def plain_script(X: np.ndarray, Y: np.ndarray, groups: np.ndarray, learners: list[str], folds: int,
                 n_jobs: int, reduce: str | None) -> tuple[float, list[float]]:
    """What a user writes by hand: OOF predictions per learner and target, then a CV'd NNLS stack."""
    start = time.perf_counter()
    jobs = [(name, t) for t in range(Y.shape[1]) for name in learners]
    oof = Parallel(n_jobs=n_jobs)(delayed(_plain_base)(X, Y[:, t], name, groups, folds, reduce)
                                  for name, t in jobs)
    scores = []
    for t in range(Y.shape[1]):
        level1 = np.column_stack([p for (name, tt), p in zip(jobs, oof, strict=True) if tt == t])
        stacked = cross_val_predict(LinearRegression(positive=True), level1, Y[:, t], groups=groups,
                                    cv=GroupKFold(folds))
        scores.append(score(Y[:, t], stacked)["main_score"])
    return time.perf_counter() - start, scores


def featbank_engine(X: np.ndarray, Y: np.ndarray, groups: np.ndarray, learners: list[str], folds: int,
                    n_jobs: int, stack_mode: str | None, reduce: str | None) -> tuple[float, list[float]]:
    """Wall seconds and per-target MainScore of the stack (or, with ``stack_mode=None``, of the best base)."""
    start = time.perf_counter()
    targets = [f"t{t}" for t in range(Y.shape[1])]
    stack = stack_mode is not None
    evaluation = evaluate({"deep": X}, Y, targets, learners, parse_protocol(f"kfold:{folds}"), groups=groups,
                          stack=stack, n_jobs=n_jobs, stack_mode=stack_mode or "nested", reduce=reduce)
    elapsed = time.perf_counter() - start
    summary = evaluation.summary()
    model = "stack" if stack else None
    scores = []
    for target in targets:
        part = summary[summary["target"] == target]
        row = part[part["model"] == model] if model else part.loc[[part["main_score_median"].idxmax()]]
        scores.append(float(row["main_score_median"].iloc[0]))
    return elapsed, scores


def stacked_cv(n: int, d: int, n_targets: int, folds: int, learners: list[str], n_jobs: int, repeats: int,
               stack_modes: list[str], reduce: str | None) -> None:
    X, Y = synthetic(n, d, targets=n_targets, seed=1)
    groups = np.arange(n) // 4  # four "variants" per source, kept together by the folds
    print(f"\npart 2: {n}x{d}, {n_targets} targets, {len(learners)} learners ({', '.join(learners)}), "
          f"grouped {folds}-fold, reduce {reduce or 'none'}, n_jobs={n_jobs}; wall seconds, median of {repeats}")
    variants: dict[str, str | None] = {f"featbank stack {mode}": mode for mode in stack_modes}
    variants["featbank bases"] = None
    times: dict[str, list[float]] = {name: [] for name in [*variants, "plain script"]}
    scores: dict[str, list[float]] = {}
    for _ in range(repeats):  # interleaved: machine load hits every variant alike
        for name, mode in variants.items():
            t, scores[name] = featbank_engine(X, Y, groups, learners, folds, n_jobs, mode, reduce)
            times[name].append(t)
            print(f"  ({name}: {t:.1f} s)", flush=True)
        t, scores["plain script"] = plain_script(X, Y, groups, learners, folds, n_jobs, reduce)
        times["plain script"].append(t)
    plain = statistics.median(times["plain script"])
    for name, values in times.items():
        median = statistics.median(values)
        what = "best base" if name == "featbank bases" else "stack"
        print(f"  {name:22s} {median:8.1f} s   {median / plain:5.2f}x plain   {what} MainScore "
              f"median over targets {statistics.median(scores[name]):.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench fit_scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000x1024,2000x1024,2000x2048",
                        help="part 1 sizes N×D, comma separated (issue grid: 2000x1024,6000x1024,20000x1024,"
                             "2000x4096,6000x4096,20000x4096)")
    parser.add_argument("--cv", default="1500x1024", help="part 2 size N×D (issue target: 6000x4096); 'none' skips")
    parser.add_argument("--targets", type=int, default=6)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--learners", default=",".join(LEARNERS))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--reduce", default=None, help="featbank's --reduce, e.g. pca:128, in every pipeline of both "
                                                       "parts (part 2's plain script included)")
    parser.add_argument("--stack-modes", default="nested", help="part 2: featbank stack modes to time, e.g. nested,ring")
    args = parser.parse_args(argv)
    learners = args.learners.split(",")
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.sizes != "none":
        one_fit_costs([_size(s) for s in args.sizes.split(",")], learners, args.reduce)
    if args.cv != "none":
        stacked_cv(*_size(args.cv), args.targets, args.folds, learners, args.n_jobs, args.repeats,
                   args.stack_modes.split(","), args.reduce)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
