"""The demo end to end on a tiny synthesized set: every stage runs and hands the next real data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from featbank.bank.store import FeatureBank
from featbank.demo.data import LABELS
from featbank.demo.run import gain_table, run_demo

TINY_CLIP = dict(seconds=1.0, size=(48, 64), fps=10)


@pytest.mark.slow
def test_demo_runs_end_to_end_on_a_tiny_set(tmp_path, capsys):
    scores = run_demo(tmp_path, n_sources=5, variants=3, heldout_sources=2, heldout_variants=3, folds=4,
                      learners=["ridge", "svr"], n_jobs=1, progress=False, clip=TINY_CLIP)
    out = capsys.readouterr().out
    assert "[5/5]" in out and "report:" in out
    assert set(scores) == set(LABELS)
    assert all(np.isfinite(list(s.values())).all() for s in scores.values())

    bank = FeatureBank(tmp_path / "bank.zarr", mode="r")
    assert bank.count == 15 + 6 and bank.validate() == []
    summary = pd.read_csv(tmp_path / "fit" / "summary.csv")
    assert set(summary["target"]) == set(LABELS) and (summary["model"] == "stack").sum() == len(LABELS)
    submission = pd.read_csv(tmp_path / "submission.csv")
    assert list(submission.columns) == ["video_id", *LABELS] and len(submission) == 6
    assert submission[list(LABELS)].notna().all(axis=None)

    # The console table is the summary's own numbers: one line per target, gain = stack - best base.
    table = gain_table(summary)
    assert list(table["target"]) == list(LABELS)
    for row in table.itertuples():
        line = next(line for line in out.splitlines() if line.split()[:1] == [row.target])
        assert f"{row.base:.3f}" in line and f"{row.stack:.3f}" in line and f"{row.gain:+.3f}" in line


def test_gain_table_picks_the_best_base_per_target():
    summary = pd.DataFrame({
        "target": ["a", "a", "a", "b", "b", "b"],
        "model": ["hc/svr", "stack", "au/mlp", "stack", "hc/svr", "au/mlp"],
        "main_score_median": [0.70, 0.75, 0.60, 0.40, 0.30, 0.50],
    })
    table = gain_table(summary).set_index("target")
    assert table.loc["a", "best_base"] == "hc/svr" and table.loc["b", "best_base"] == "au/mlp"
    np.testing.assert_allclose(table["gain"], [0.05, -0.10])
