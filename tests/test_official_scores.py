"""Official track scores held to the organisers' published numbers and to hand-computed pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from featbank.errors import ManifestError, SubmissionError
from featbank.io.submission import read_labels, read_submission
from featbank.learning import metrics
from featbank.learning.official import labelled_pairs, official_scores

# NTIRE 2024 KVQ Table 1 (numbers.md §5): Final, SROCC, PLCC, Rank1, Rank2 of every row.
KVQ_2024 = [
    (0.9228, 0.9361, 0.9359, 0.7792, 0.8284), (0.9145, 0.9298, 0.9325, 0.7013, 0.8284),
    (0.9120, 0.9268, 0.9312, 0.6883, 0.8284), (0.9116, 0.9275, 0.9211, 0.7489, 0.8462),
    (0.8932, 0.9026, 0.9071, 0.7186, 0.8580), (0.8855, 0.8966, 0.8977, 0.7100, 0.8521),
    (0.8690, 0.8841, 0.8839, 0.6623, 0.8047), (0.8655, 0.8759, 0.8777, 0.6883, 0.8402),
    (0.8641, 0.8778, 0.8822, 0.6494, 0.7929), (0.8555, 0.8629, 0.8668, 0.6970, 0.8462),
    (0.8243, 0.8387, 0.8324, 0.6234, 0.8225), (0.8098, 0.8164, 0.8297, 0.5758, 0.8047),
    (0.7677, 0.7774, 0.7832, 0.5931, 0.7160), (0.7869, 0.7974, 0.7950, 0.6190, 0.7870),
    (0.8159, 0.8306, 0.8202, 0.6147, 0.8461), (0.8356, 0.8473, 0.8467, 0.6494, 0.8166),
]


def test_kvq_final_reproduces_the_2024_winner_and_every_row():
    assert metrics.kvq_final(0.9361, 0.9359, 0.7792, 0.8284) == pytest.approx(0.92278, abs=1e-12)
    # Every column is printed to 4 decimals: each input is off by up to 0.00005 (weights sum to 1),
    # the printed Final by up to 0.00005 more. TVQE's row needs that full 0.0001 (0.911935 vs 0.9120).
    for final, srocc, plcc, rank1, rank2 in KVQ_2024:
        assert metrics.kvq_final(srocc, plcc, rank1, rank2) == pytest.approx(final, abs=1e-4)


def test_xgc_ugc_is_the_mean_of_six_dimensions_as_in_the_winner_row():
    slcv = dict(zip(metrics.XGC_UGC_DIMENSIONS, (0.8898, 0.8411, 0.8805, 0.9101, 0.8216, 0.8954)))
    assert metrics.xgc_ugc(slcv) == pytest.approx(5.2385 / 6, abs=1e-12)  # 0.873083, printed 0.8731
    assert round(metrics.xgc_ugc(slcv), 4) == 0.8731
    with pytest.raises(ValueError, match="missing overall"):
        metrics.xgc_ugc({d: 0.5 for d in metrics.XGC_UGC_DIMENSIONS[:5]})


def test_finevd_track_reports_each_dimension_and_their_mean():
    rng = np.random.default_rng(3)
    n = 60
    labels = pd.DataFrame(rng.uniform(0, 100, (n, 6)), columns=metrics.XGC_UGC_DIMENSIONS,
                          index=[f"v{i}.mp4" for i in range(n)])
    predictions = labels + rng.normal(0, [5, 20, 10, 8, 30, 4], (n, 6))
    table, value = official_scores("finevd", labels, predictions)
    assert list(table.index) == list(metrics.XGC_UGC_DIMENSIONS)
    for dim in metrics.XGC_UGC_DIMENSIONS:
        assert table.loc[dim, "score"] == pytest.approx(metrics.main_score_poly3(labels[dim], predictions[dim]))
    assert value == pytest.approx(table["score"].mean())


def test_main_score_poly3_takes_the_cubic_and_ignores_sign_but_selection_score_does_not():
    y = np.linspace(1.0, 5.0, 21)
    cube_root = np.cbrt(y - 3.0)  # a cubic maps it exactly back onto y
    assert metrics.plcc_poly3(y, cube_root) == pytest.approx(1.0)
    assert metrics.plcc(y, cube_root) < 0.99
    assert metrics.main_score_poly3(y, cube_root) == pytest.approx(1.0)
    assert metrics.main_score_poly3(y, -cube_root) == pytest.approx(1.0)  # official: inverted = perfect
    assert metrics.selection_score(y, cube_root) == pytest.approx(1.0)
    assert metrics.selection_score(y, -cube_root) == pytest.approx(-1.0)
    noisy = y + np.random.default_rng(0).normal(0, 1.0, y.size)
    assert metrics.selection_score(y, -noisy) == pytest.approx(-metrics.selection_score(y, noisy))


# Hand-worked KVQ example: a, b, c share source G1 (b and c tie); d and e are single-item groups.
HAND = pd.DataFrame({"video_id": ["a", "b", "c", "d", "e"], "mos": [1.0, 2.0, 2.0, 4.0, 3.0],
                     "group": ["G1", "G1", "G1", "G2", "G3"]})
HAND_PRED = pd.DataFrame({"video_id": ["a", "b", "c", "d", "e"], "mos": [0.1, 0.5, 0.3, 0.2, 0.9]})


def test_pairs_from_labels_exclude_ties_and_split_by_group():
    pairs = labelled_pairs(HAND.set_index("video_id")["mos"], HAND.set_index("video_id")["group"])
    same = pairs[pairs["homologous"]]
    assert list(zip(same["first"], same["second"])) == [("a", "b"), ("a", "c")]  # (b, c) tied: left out
    assert len(pairs[~pairs["homologous"]]) == 7  # 3·2 across groups + (d, e); single items pair only across


def test_kvq_rank_accuracies_match_the_hand_count():
    table, value = official_scores("kvq", HAND, HAND_PRED)
    row = table.loc["mos"]
    # homologous: (a,b) and (a,c) both ordered right -> 2/2.
    # non-homologous: (a,d) ok, (a,e) ok, (b,d) wrong, (b,e) ok, (c,d) wrong, (c,e) ok, (d,e) wrong -> 4/7.
    assert row["rank1"] == 1.0 and row["rank2"] == pytest.approx(4 / 7)
    assert (row["pairs_rank1"], row["pairs_rank2"]) == (2, 7)
    y, p = HAND["mos"].to_numpy(), HAND_PRED["mos"].to_numpy()
    assert row["srocc"] == pytest.approx(metrics.srcc(y, p)) and row["plcc"] == pytest.approx(metrics.plcc(y, p))
    assert value == pytest.approx(0.45 * row["srocc"] + 0.45 * row["plcc"] + 0.05 * 1.0 + 0.05 * 4 / 7)


def test_a_predicted_tie_counts_as_first_better_like_the_organisers_script():
    assert metrics.ranking_accuracy([1.0], [1.0], [True]) == 1.0
    assert metrics.ranking_accuracy([1.0], [1.0], [False]) == 0.0
    with pytest.raises(ValueError, match="no labelled pairs"):
        metrics.ranking_accuracy([], [], [])


def test_a_pair_file_replaces_the_derived_pairs():
    pairs = pd.DataFrame({"first": ["b", "d"], "second": ["c", "e"], "first_better": [True, False],
                          "homologous": [True, False]})
    table, _ = official_scores("kvq", HAND, HAND_PRED, pairs=pairs)
    assert table.loc["mos", "rank1"] == 1.0  # b 0.5 >= c 0.3, labelled b better
    assert table.loc["mos", "rank2"] == 1.0  # d 0.2 < e 0.9, labelled e better
    with pytest.raises(SubmissionError, match="not in the labels: zz"):
        official_scores("kvq", HAND, HAND_PRED, pairs=pairs.assign(second=["c", "zz"]))


def test_kvq_without_groups_or_pairs_and_with_only_single_items_is_explained():
    with pytest.raises(SubmissionError, match="--pairs"):
        official_scores("kvq", HAND.drop(columns="group"), HAND_PRED)
    singles = HAND.assign(group=["a", "b", "c", "d", "e"])
    with pytest.raises(SubmissionError, match="no homologous pairs"):
        official_scores("kvq", singles, HAND_PRED)


def test_large_label_sets_sample_pairs_reproducibly():
    rng = np.random.default_rng(0)
    n = 500
    labels = pd.Series(rng.normal(size=n), index=[str(i) for i in range(n)])
    groups = pd.Series([str(i // 5) for i in range(n)], index=labels.index)
    first = labelled_pairs(labels, groups, max_pairs=20_000)
    again = labelled_pairs(labels, groups, max_pairs=20_000)
    assert first.equals(again)
    assert first["homologous"].sum() == 100 * 10  # 100 groups of 5: every homologous pair, none sampled away
    assert len(first) - 1000 == 20_000  # non-homologous: sampled down to the cap (no tied labels here)


@pytest.mark.parametrize("edit, message", [
    (lambda p: p.iloc[:-1], "miss 1 labelled item"),
    (lambda p: pd.concat([p, p.iloc[:1]]), "more than once: a"),
    (lambda p: p.assign(mos=[0.1, np.nan, 0.3, 0.2, 0.9]), "NaN, infinite or not numbers: b"),
])
def test_bad_predictions_are_named(edit, message):
    with pytest.raises(SubmissionError, match=message):
        official_scores("kvq", HAND, edit(HAND_PRED))


def test_labels_out_of_range_and_unknown_tracks_are_refused():
    with pytest.raises(SubmissionError, match=r"outside track kvq's range \[1, 5\]: d"):
        official_scores("kvq", HAND.assign(mos=[1.0, 2.0, 2.0, 7.0, 3.0]), HAND_PRED)
    with pytest.raises(ManifestError, match="unknown track"):
        official_scores("ntire2099", HAND, HAND_PRED)


def test_thqa_baseline_scores_the_published_0_7892(realdata):
    folder = realdata / "zyj-2000+THQA-NTIRE"
    labels = read_labels("thqa", folder / "thqa_ntire_val.csv")
    predictions = read_submission("thqa", folder / "baseline_example.zip")
    table, value = official_scores("thqa", labels, predictions)
    assert round(value, 4) == 0.7892 and table.loc["mos", "n"] == 1714
    assert round(table.loc["mos", "srcc"], 4) == 0.7702
    _, logistic = official_scores("ugc", labels, predictions)  # the 4-parameter-logistic variant
    assert round(logistic, 4) == 0.7892
