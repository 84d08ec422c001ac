"""Clip sampling in time: spans, valid starts, test starts, padding, stride validation."""

from __future__ import annotations

import numpy as np
import pytest

from train import clips
from train.clips import ClipSpec


def kept(num_frames: int, frame_stride: int = 2, first: int = 0) -> np.ndarray:
    return first + frame_stride * np.arange(num_frames)


def test_span_counts_source_frames():
    # Paper Table 1: 8 RGB frames 8 apart and 32 pose frames 2 apart.
    assert ClipSpec(8, 8).span == 57
    assert ClipSpec(32, 2).span == 63
    assert clips.clip_span(1, 5) == 1


def test_start_range_on_the_kept_grid():
    idx = kept(150)  # source frames 0..298
    first, last, padded = clips.start_range(idx, 63, 2)
    assert (first, last, padded) == (0, 236, False)  # 236 + 62 = 298, the last kept frame
    # Odd room snaps down to the grid.
    first, last, padded = clips.start_range(kept(150), 60, 2)
    assert (first, last, padded) == (0, 238, False)  # 238 + 59 = 297; 240 + 59 > 298


def test_short_video_is_padded_with_its_last_frame():
    idx = kept(10)  # 0..18: 19 source frames, shorter than 57
    first, last, padded = clips.start_range(idx, 57, 2)
    assert padded and first == last == 0
    pos = clips.clip_positions(idx, first, ClipSpec(8, 8))
    # Frames 0, 8, 16 exist; 24..56 repeat the last kept frame (position 9, source 18).
    assert pos.tolist() == [0, 4, 8, 9, 9, 9, 9, 9]


def test_clip_positions_follow_the_stride():
    idx = kept(100, first=4)
    pos = clips.clip_positions(idx, 20, ClipSpec(4, 6))
    assert idx[pos].tolist() == [20, 26, 32, 38]


def test_train_start_is_uniform_over_the_grid():
    rng = np.random.default_rng(0)
    starts = [clips.train_start(rng, 4, 40, 4) for _ in range(2000)]
    assert set(starts) == set(range(4, 41, 4))
    counts = np.bincount([(s - 4) // 4 for s in starts])
    assert counts.min() > 140  # 10 values, ~200 each


def test_test_starts_evenly_spaced_and_centred():
    starts = clips.test_starts(0, 198, 2, 10)
    assert len(starts) == 10 and starts == sorted(starts)
    gaps = np.diff(starts)
    assert gaps.min() >= 18 and gaps.max() <= 22  # 100 grid starts / 10 clips
    assert starts[0] > 0 and starts[-1] < 198  # centred in their shares, not at the ends
    assert clips.test_starts(0, 100, 2, 1) == [50]  # one clip: the centre
    # A padded video (a single valid start) repeats it.
    assert clips.test_starts(6, 6, 2, 10) == [6] * 10


def test_strides_must_be_multiples_of_the_frame_stride():
    clips.check_strides({"rgb": ClipSpec(8, 8), "pose": ClipSpec(32, 2)}, 2)
    with pytest.raises(clips.StrideError, match="stride 3 is not a multiple .* frame stride 2"):
        clips.check_strides({"pose": ClipSpec(32, 3)}, 2)
    with pytest.raises(clips.StrideError, match="multiple"):
        clips.check_strides({"rgb": ClipSpec(8, 4)}, 8)
