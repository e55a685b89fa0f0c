"""VIDEVAL's released feature matrices, labels and published results (Tu et al., TIP 2021).

The VIDEVAL repository ships 60-d features for KoNViD-1k, LIVE-VQC and YouTube-UGC with the MOS
files, and its README (= the paper) publishes medians over 100 random 80/20 splits. They are the
reference :func:`featbank.learning.protocols.videval` and the ``svr_grid`` learner are checked against.

Loading follows the authors' script: MOS column per dataset, and on YouTube-UGC the 57 grayscale
videos removed, leaving 1323: the shipped subset ``youtube_ugc_color``
(``manifests/subsets/youtube_ugc_color.toml``, the list of ``demo_eval_BVQA_feats_one_dataset.py``),
the same one ``featbank import --subset youtube_ugc_color`` applies.
NaN/Inf features are returned as they are (the authors set them to 0; featbank's pipelines impute
the training median instead); pass ``nan_to_zero=True`` for the authors' choice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.io import loadmat

from featbank.errors import FeatbankError
from featbank.io.subsets import load_subset

DATASETS: dict[str, str] = {"KONVID_1K": "mos", "LIVE_VQC": "MOS", "YOUTUBE_UGC": "MOSFull"}
"""Dataset name (as in the file names) -> MOS column of its ``*_metadata.csv``."""

PUBLISHED: dict[str, dict[str, float]] = {
    "KONVID_1K": {"srcc": 0.7832, "plcc": 0.7803, "srcc_std": 0.0216, "plcc_std": 0.0223},
    "LIVE_VQC": {"srcc": 0.7522, "plcc": 0.7514, "srcc_std": 0.0390, "plcc_std": 0.0420},
    "YOUTUBE_UGC": {"srcc": 0.7787, "plcc": 0.7733, "srcc_std": 0.0254, "plcc_std": 0.0257},
}
"""VIDEVAL + SVR, median (and std) over 100 splits: VIDEVAL README / BVQA_Benchmark README."""

COLOUR_ONLY: dict[str, str] = {"YOUTUBE_UGC": "youtube_ugc_color"}
"""Dataset -> the shipped subset VIDEVAL's published numbers use (YouTube-UGCc: colour videos only)."""


def load(folder: str | Path, dataset: str, nan_to_zero: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(n, 60)`` and MOS ``(n,)`` of one dataset from VIDEVAL's ``features/`` folder."""
    if dataset not in DATASETS:
        raise FeatbankError(f"unknown VIDEVAL dataset {dataset!r}; known: {', '.join(DATASETS)}")
    folder = Path(folder)
    X = np.asarray(loadmat(folder / f"{dataset}_VIDEVAL_feats.mat")["feats_mat"], dtype=np.float64)
    metadata = pd.read_csv(folder / f"{dataset}_metadata.csv")
    y = metadata[DATASETS[dataset]].to_numpy(dtype=np.float64)
    if X.shape[0] != y.shape[0]:
        raise FeatbankError(f"{dataset}: {X.shape[0]} feature rows but {y.shape[0]} MOS values")
    if dataset in COLOUR_ONLY:
        subset = load_subset(COLOUR_ONLY[dataset])
        keep = np.asarray(subset.keep(metadata[subset.id_column].astype(str).tolist(), len(y)))
        X, y = X[keep], y[keep]
    if nan_to_zero:
        X = np.where(np.isfinite(X), X, 0.0)
    return X, y
