"""Clip sampling in time: which kept frames a clip reads (docs/design.md, "Time").

Strides count *source* frames. The build keeps every ``frame_stride``-th source frame and records
their source indices (``KEY.frames.npy``); a clip of T frames with stride s starting at source
frame ``start`` reads source frames start, start + s, ..., start + (T - 1) s, so it spans
(T - 1) s + 1 source frames. Appearance and pose clips share their start (paper Table 1), so the
valid range of starts is set by the longer of the two spans. A video shorter than the span
repeats its last kept frame.

Every function here is pure (numpy in, numpy out) so that it can be tested on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import InvalidInput

__all__ = [
    "ClipSpec",
    "StrideError",
    "check_strides",
    "clip_span",
    "start_range",
    "train_start",
    "test_starts",
    "clip_positions",
]


class StrideError(InvalidInput):
    """A clip stride that the build's frame stride cannot serve."""


@dataclass(frozen=True)
class ClipSpec:
    """T frames, ``stride`` source frames apart."""

    length: int
    stride: int

    @property
    def span(self) -> int:
        return clip_span(self.length, self.stride)


def clip_span(length: int, stride: int) -> int:
    """Source frames a clip of ``length`` frames ``stride`` apart covers: (T - 1) * stride + 1."""
    if length < 1 or stride < 1:
        raise ValueError(f"clip length and stride must be >= 1, got {length} and {stride}")
    return (length - 1) * stride + 1


def check_strides(specs: dict[str, ClipSpec], frame_stride: int) -> None:
    """Refuse strides that are not multiples of the build's frame stride (one-line message).

    A stride of 3 over frames kept every 2nd source frame would have to read frames that were
    never stored.
    """
    for name, spec in specs.items():
        if spec.length < 1 or spec.stride < 1:
            raise StrideError(f"{name}: clip length and stride must be >= 1")
        if spec.stride % frame_stride:
            raise StrideError(
                f"{name} stride {spec.stride} is not a multiple of the dataset's frame stride "
                f"{frame_stride} (strides count source frames; the build kept one source "
                f"frame in {frame_stride})"
            )


def start_range(frame_indices: np.ndarray, span: int, frame_stride: int) -> tuple[int, int, bool]:
    """(first start, last start, padded) for a video whose kept frames are ``frame_indices``.

    Starts are source frame indices on the kept grid (first kept index + a multiple of
    ``frame_stride``). ``padded`` is True when the video is shorter than ``span``: the only start
    is the first frame and the clip repeats the last kept frame.
    """
    if len(frame_indices) == 0:
        raise ValueError("video has no kept frames")
    first = int(frame_indices[0])
    last = int(frame_indices[-1])
    room = last - first - (span - 1)
    if room < 0:
        return first, first, True
    return first, first + (room // frame_stride) * frame_stride, False


def train_start(rng: np.random.Generator, first: int, last: int, frame_stride: int) -> int:
    """A uniformly random start in [first, last] on the kept-frame grid."""
    choices = (last - first) // frame_stride + 1
    return first + int(rng.integers(choices)) * frame_stride


def test_starts(first: int, last: int, frame_stride: int, num_clips: int) -> list[int]:
    """``num_clips`` starts evenly spaced over [first, last], each in the middle of its share.

    As TSN/mmaction's test sampling: the range is cut into ``num_clips`` equal parts and each
    clip starts at the centre of one; one clip starts at the centre of the range. Starts snap
    down to the kept-frame grid; a range too short for distinct starts repeats them.
    """
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    grid = (last - first) // frame_stride + 1  # number of distinct starts available
    offsets = (np.arange(num_clips) + 0.5) * grid / num_clips
    steps = np.minimum(np.floor(offsets).astype(np.int64), grid - 1)
    return [first + int(s) * frame_stride for s in steps]


def clip_positions(frame_indices: np.ndarray, start: int, spec: ClipSpec) -> np.ndarray:
    """Positions in the kept frames (0..F-1) of the clip's T frames.

    Source index start + i * stride maps to the last kept frame at or before it, so a clip past
    the end of the video repeats the last kept frame (padding), and a frame the build skipped
    falls back to the one before it.
    """
    wanted = start + spec.stride * np.arange(spec.length, dtype=np.int64)
    pos = np.searchsorted(np.asarray(frame_indices, dtype=np.int64), wanted, side="right") - 1
    return np.clip(pos, 0, len(frame_indices) - 1)
