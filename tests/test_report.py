"""Tests for :mod:`featbank.learning.report`: the report says what was run and shows the right models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from featbank.learning.engine import evaluate
from featbank.learning.protocols import KFoldProtocol, VidevalProtocol
from featbank.learning.report import readable_names, summary_text, write_report


@pytest.fixture(scope="module")
def weak_first() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Two blocks, the weaker one listed first (the order a user typed them in)."""
    rng = np.random.default_rng(3)
    strong = rng.normal(size=(60, 3))
    y = strong[:, 0] + 0.1 * rng.normal(size=60)
    return {"weak@1a2b": rng.normal(size=(60, 3)), "strong@3c4d": strong}, y


def test_report_names_the_protocol_and_shows_the_best_base_not_the_first(weak_first, tmp_path: Path) -> None:
    blocks, y = weak_first
    evaluation = evaluate(blocks, y, ["mos"], ["ridge"], VidevalProtocol(3), stack=True, n_jobs=1)
    assert evaluation.best_base("mos") == "strong@3c4d/ridge"
    report = write_report(evaluation, tmp_path, "evaluate").read_text()
    assert report.startswith("# featbank evaluate report")
    assert "protocol `videval:3`" in report and "3 round(s), 3 split(s)" in report
    assert "median ± std over rounds" in report and "out-of-fold" not in report.split("\n")[2]
    assert (tmp_path / "scatter_mos.png").stat().st_size > 0
    table = report[report.index("## mos"):]
    assert table.index("strong/ridge") < table.index("weak/ridge")  # ranked, readable names


def test_one_round_shows_no_spread_and_console_names_the_run(weak_first) -> None:
    blocks, y = weak_first
    evaluation = evaluate(blocks, y, ["mos"], ["ridge"], KFoldProtocol(3), stack=False, n_jobs=1)
    text = summary_text(evaluation)
    assert text.startswith("protocol `kfold:3x1`: 3-fold cross-validation")
    assert "== mos (one round) ==" in text and "±" not in text


def test_readable_names_drop_hashes_only_when_unambiguous() -> None:
    names = readable_names(["handcrafted@aa11ff/svr", "handcrafted@aa22ff/svr", "audio@cc/svr", "a@1+b@2/mlp",
                            "stack"])
    assert names == {"handcrafted@aa11ff/svr": "handcrafted@aa11/svr", "handcrafted@aa22ff/svr": "handcrafted@aa22/svr",
                     "audio@cc/svr": "audio/svr", "a@1+b@2/mlp": "a+b/mlp", "stack": "stack"}
