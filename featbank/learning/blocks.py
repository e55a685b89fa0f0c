"""Feature blocks as learners see them: each named group alone, or several joined into one matrix.

A block is read pooled (one vector per item) by most learners, and per step by the temporal head.

``--features videval,brisque`` gives two blocks, so each learner fits each block separately and
only the stack blends them; ``--features videval+brisque`` gives one block whose columns are both
groups side by side, so a learner can use interactions between them. A joined block is named by
its groups' bank keys joined with ``+``, which is how a fitted model asks for it again.
"""

from __future__ import annotations

import numpy as np

from featbank.bank.matrix import FeatureBlocks, load_blocks
from featbank.bank.store import FeatureBank
from featbank.bank.timeline import load_timeline
from featbank.io.manifest import Manifest

JOIN = "+"


def load_feature_blocks(bank: FeatureBank, manifest: Manifest, features: list[str]) -> FeatureBlocks:
    """One block per entry of ``features``; ``A+B`` entries are their groups' matrices side by side.

    A row is usable when every group it needs is usable (a failed item of any joined group drops
    the row), exactly as for separate blocks.
    """
    parts = list(dict.fromkeys(part for spec in features for part in spec.split(JOIN)))
    groups = load_blocks(bank, manifest, parts)
    blocks: dict[str, np.ndarray] = {}
    for spec in features:
        keys = [groups.keys[part] for part in spec.split(JOIN)]
        blocks[JOIN.join(keys)] = np.hstack([groups.blocks[key] for key in keys])
    return FeatureBlocks(blocks=blocks, usable=groups.usable, dropped=groups.dropped)


def load_step_blocks(bank: FeatureBank, manifest: Manifest, block_names: list[str]) -> dict[str, np.ndarray]:
    """The per-step form of each named block (as :func:`load_feature_blocks` names them), every manifest row.

    ``(items, steps, features)`` float32 with NaN on absent steps, what a step-reading learner
    (the temporal head) takes; a joined block's groups are aligned on one time grid by
    :func:`featbank.bank.timeline.load_timeline`.
    """
    return {name: load_timeline(bank, manifest, name.split(JOIN)).steps for name in block_names}


def bank_keys(block_names: list[str]) -> list[str]:
    """The bank groups a list of block names (joined or not) reads, each once."""
    return list(dict.fromkeys(part for name in block_names for part in name.split(JOIN)))
