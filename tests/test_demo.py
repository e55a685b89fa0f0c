"""The demo end to end on a tiny synthesized set: every stage runs and hands the next real data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from featbank.bank.store import FeatureBank
from featbank.demo.run import run_demo
from featbank.demo.data import LABELS


@pytest.mark.slow
def test_demo_runs_end_to_end_on_a_tiny_set(tmp_path, capsys):
    scores = run_demo(tmp_path, n_sources=5, variants=3, heldout_variants=1, learners=["ridge", "svr"],
                      n_jobs=1, progress=False)
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
