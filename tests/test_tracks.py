"""Challenge tracks: shipped definitions load, their templates conform, violations are all listed."""

from __future__ import annotations

import pandas as pd
import pytest

from featbank.cli import main
from featbank.errors import ManifestError
from featbank.io.manifest import load_manifest
from featbank.io import tracks
from featbank.io.submission import LAYOUTS
from featbank.io.tracks import available, example_manifest, load_track
from featbank.learning.official import SCORES


@pytest.mark.parametrize("name", available())
def test_every_track_template_conforms_to_its_track(name):
    track = load_track(name)
    manifest = load_manifest(example_manifest(name), check_files=False)
    assert track.problems(manifest) == []
    assert set(track.labels) <= set(manifest.label_columns)


def test_tracks_cover_the_challenges_featbank_targets():
    assert {"finevd", "kvq", "ugc", "aigc_video", "aigc_image", "thqa"} <= set(available())
    assert load_track("finevd").labels == ("color", "noise", "artifact", "blur", "temporal", "overall")
    assert load_track("aigc_image").media == "image" and load_track("aigc_video").prompt


def test_violations_are_listed_together(tmp_path):
    rows = pd.DataFrame({"video_id": ["a", "b", "c"], "path": ["a.mp4", "b.png", "c.mp4"],
                         "mos": [2.0, 7.5, -1.0]})
    path = tmp_path / "m.csv"
    rows.to_csv(path, index=False)
    manifest = load_manifest(path, check_files=False)
    with pytest.raises(ManifestError) as error:
        load_track("thqa").check(manifest)
    message = str(error.value)
    assert "are images" in message and "line(s) 3" in message  # b.png in a video track
    assert "outside [0, 5] at line(s) 3, 4" in message
    problems = load_track("aigc_video").problems(manifest)
    assert any("'prompt'" in p for p in problems) and any("'group'" in p for p in problems)
    assert any("missing label column(s) color" in p for p in load_track("finevd").problems(manifest))


def test_every_track_names_its_official_score_and_submission_layout():
    chosen = {name: (load_track(name).score, load_track(name).layout) for name in available()}
    assert all(score in SCORES and layout in LAYOUTS for score, layout in chosen.values())
    assert chosen["kvq"] == ("kvq_final", "kvq_prediction_zip")
    assert chosen["finevd"] == ("xgc_ugc", "output_txt_zip")
    assert chosen["thqa"] == ("main_score_poly3", "output_txt_zip")


@pytest.mark.parametrize("line, message", [
    ('score = "spearman_only"\nlayout = "csv"', "unknown score 'spearman_only'; scores: kvq_final"),
    ('score = "main_score_poly3"\nlayout = "pdf"', "unknown layout 'pdf'; layouts: csv"),
    ('layout = "csv"', "unknown score None"),
])
def test_a_track_with_an_unknown_score_or_layout_does_not_load(tmp_path, monkeypatch, line, message):
    spec = tmp_path / "mine.toml"
    spec.write_text(f'title = "t"\nmedia = "video"\nlabels = ["mos"]\n{line}\n')
    monkeypatch.setattr(tracks, "_track_files", lambda: {"mine": spec})
    with pytest.raises(ManifestError, match=message):
        load_track("mine")


def test_unknown_track_names_the_valid_ones():
    with pytest.raises(ManifestError, match="tracks: aigc_image"):
        load_track("ntire2099")


def test_check_command_exit_codes(tmp_path, capsys):
    (tmp_path / "a.mp4").write_bytes(b"x")
    path = tmp_path / "m.csv"
    pd.DataFrame({"video_id": ["a"], "path": ["a.mp4"], "mos": [3.0]}).to_csv(path, index=False)
    assert main(["check", "--manifest", str(path), "--track", "kvq"]) == 0
    assert "1 items" in capsys.readouterr().out
    assert main(["check", "--manifest", str(path), "--track", "finevd"]) == 2
    assert "does not fit track finevd" in capsys.readouterr().err
    assert main(["tracks"]) == 0 and "thqa" in capsys.readouterr().out
