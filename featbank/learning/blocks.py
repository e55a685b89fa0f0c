"""Feature blocks as learners see them: each named group alone, or several joined into one matrix.

``--features videval,brisque`` gives two blocks, so each learner fits each block separately and
only the stack blends them; ``--features videval+brisque`` gives one block whose columns are both
groups side by side, so a learner can use interactions between them. A joined block is named by
its groups' bank keys joined with ``+``, which is how a fitted model asks for it again.
"""

from __future__ import annotations

import numpy as np

from featbank.bank.matrix import FeatureBlocks, load_blocks
from featbank.bank.store import FeatureBank
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


def bank_keys(block_names: list[str]) -> list[str]:
    """The bank groups a list of block names (joined or not) reads, each once."""
    return list(dict.fromkeys(part for name in block_names for part in name.split(JOIN)))
