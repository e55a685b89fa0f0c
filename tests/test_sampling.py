import numpy as np
import pytest

from featbank.extraction.media import MediaInfo
from featbank.extraction.sampling import AudioSeconds, Clips, KeyFrames, UniformFrames, second_starts

VIDEO = MediaInfo(n_frames=240, fps=30.0, width=64, height=48, has_audio=True)


def test_key_frames_are_first_frame_of_each_second():
    plan = KeyFrames().plan(VIDEO)
    assert plan.frame_indices[:, 0].tolist() == [0, 30, 60, 90, 120, 150, 180, 210]
    assert plan.timestamps.tolist() == list(range(8))


def test_clips_spread_inside_their_second_and_consecutive_are_adjacent():
    spread = Clips(frames=4).plan(VIDEO).frame_indices
    assert spread.shape == (8, 4)
    assert spread[1].tolist() == [33, 41, 48, 56]  # (k + 0.5) * 30 / 4 after 30
    assert (spread // 30 == np.arange(8)[:, None]).all()  # never leaves its own second
    adjacent = Clips(frames=4, consecutive=True).plan(VIDEO).frame_indices
    assert adjacent[2].tolist() == [60, 61, 62, 63]


def test_long_video_keeps_max_steps_spread_over_whole_length():
    long = MediaInfo(n_frames=30 * 600, fps=30.0, width=8, height=8, has_audio=False)
    plan = KeyFrames(max_steps=64).plan(long)
    assert plan.n_steps == 64
    assert plan.timestamps[0] == 0 and plan.timestamps[-1] == 599
    assert np.all(np.diff(plan.timestamps) > 0)


def test_indices_never_leave_the_video():
    one_frame = MediaInfo(n_frames=1, fps=25.0, width=8, height=8, has_audio=False)
    for sampling in (KeyFrames(), Clips(frames=8), Clips(frames=8, consecutive=True), UniformFrames(n=5)):
        idx = sampling.plan(one_frame).frame_indices
        assert idx.min() == 0 and idx.max() == 0
    tail = Clips(frames=16, consecutive=True).plan(MediaInfo(30, 20.0, 8, 8, False)).frame_indices
    assert tail[1].tolist() == list(range(14, 30))  # the last window slides back inside the video
    tiny = Clips(frames=16, consecutive=True).plan(MediaInfo(5, 20.0, 8, 8, False)).frame_indices
    assert tiny.tolist() == [[0, 1, 2, 3, 4] + [4] * 11]  # only a video shorter than the window repeats


def test_uniform_frames_centres_and_bounds_steps():
    plan = UniformFrames(n=4).plan(VIDEO)
    assert plan.frame_indices[:, 0].tolist() == [30, 90, 150, 210]
    assert UniformFrames(n=100, max_steps=10).max_steps == 100


def test_image_gives_one_step_and_audio_plan_has_no_frames():
    image = MediaInfo(n_frames=1, fps=1.0, width=8, height=8, has_audio=False, is_image=True)
    assert image.duration == 0 and KeyFrames().plan(image).n_steps == 1
    audio = AudioSeconds().plan(VIDEO)
    assert audio.frame_indices.shape == (8, 0) and audio.n_steps == 8


@pytest.mark.parametrize("duration,expected", [(0.0, 1), (0.4, 1), (1.6, 2), (12.7, 13)])
def test_second_starts_rounds_duration(duration, expected):
    assert len(second_starts(duration, 64)) == expected
