"""NTU RGB+D ``.skeleton`` text files (Kinect v2, 25 joints) and NTU sample names.

The file is line oriented::

    <frame count>
    per frame:  <body count>
      per body: bodyID clipedEdges handLeftConfidence handLeftState handRightConfidence
                handRightState isResticted leanX leanY trackingState        (10 values)
                <joint count: 25>
                per joint: x y z depthX depthY colorX colorY
                           orientationW orientationX orientationY orientationZ trackingState

x, y, z are camera-space metres; depthX/Y pixels of the 512x424 depth image; colorX/Y pixels of
the 1920x1080 colour video. The readers here keep colorX/colorY as the 2D keypoints and map the
joint's trackingState to a score: 2 (tracked) -> 1.0, 1 (inferred) -> 0.5, 0 (not tracked) -> 0.0.
Files made by ``pipeline synth`` use the same format with colorX/colorY in pixels of the (small)
synthetic video, pixel centres at integers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np

from pipeline.formats._io import (
    PoseFileError,
    PoseSource,
    format_float32_array,
    read_text,
    source_name,
    write_data,
)

__all__ = [
    "NUM_JOINTS",
    "NtuBody",
    "NtuName",
    "NtuSkeleton",
    "bodies_from_keypoints",
    "parse_ntu_name",
    "read_ntu_skeleton",
    "write_ntu_skeleton",
]

NUM_JOINTS = 25
# Score of a joint by its Kinect trackingState (index = state).
_STATE_SCORE = np.array([0.0, 0.5, 1.0], dtype=np.float32)
_NAME_RE = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")


@dataclass(frozen=True)
class NtuName:
    """The fields of an NTU sample name such as ``S001C002P003R002A013``."""

    setup: int
    camera: int
    performer: int
    replication: int
    action: int

    @property
    def name(self) -> str:
        return (
            f"S{self.setup:03d}C{self.camera:03d}P{self.performer:03d}"
            f"R{self.replication:03d}A{self.action:03d}"
        )


def parse_ntu_name(name: str) -> NtuName:
    """Parse ``SsssCcccPpppRrrrAaaa``; a path or a suffix (``_rgb.avi``, ``.skeleton``) is fine."""
    base = PurePosixPath(str(name).replace("\\", "/")).name
    match = _NAME_RE.match(base)
    if match is None:
        raise ValueError(f"not an NTU RGB+D sample name (SsssCcccPpppRrrrAaaa): {name!r}")
    return NtuName(*(int(g) for g in match.groups()))


@dataclass
class NtuSkeleton:
    """A parsed ``.skeleton`` file.

    ``keypoints`` float32 [F, P, 25, 3]: (colorX, colorY, score) with P the number of distinct
    body ids in the file; person p is always body ``body_ids[p]`` (ids in order of first
    appearance), so the person axis is a track. Frames without that body are zeros.
    ``xyz`` float32 [F, P, 25, 3]: camera-space metres, zeros where absent.
    """

    frames: int
    keypoints: np.ndarray
    body_ids: list[int]
    xyz: np.ndarray = field(repr=False)


@dataclass
class NtuBody:
    """One body in one frame, as the file stores it.

    ``joints`` float [25, 11]: x y z depthX depthY colorX colorY orientationW orientationX
    orientationY orientationZ; ``tracking`` int [25] in {0, 1, 2}.
    """

    body_id: int
    joints: np.ndarray
    tracking: np.ndarray
    clipped_edges: int = 0
    hand_left: tuple[int, int] = (0, 0)  # (confidence, state)
    hand_right: tuple[int, int] = (0, 0)
    restricted: int = 0
    lean: tuple[float, float] = (0.0, 0.0)
    tracking_state: int = 2


class _Lines:
    """Non-blank lines of a file with their 1-based line numbers, for error messages."""

    def __init__(self, text: str, name: str) -> None:
        self.name = name
        self.items = [(n, line.split()) for n, line in enumerate(text.splitlines(), 1)]
        self.items = [(n, parts) for n, parts in self.items if parts]
        self.pos = 0

    def next(self, count: int, what: str) -> tuple[int, list[str]]:
        if self.pos >= len(self.items):
            last = self.items[-1][0] if self.items else 0
            raise self.error(last + 1, f"unexpected end of file, expected {what}")
        lineno, parts = self.items[self.pos]
        self.pos += 1
        if len(parts) != count:
            raise self.error(lineno, f"expected {count} values ({what}), got {len(parts)}")
        return lineno, parts

    def error(self, lineno: int, message: str) -> PoseFileError:
        return PoseFileError(f"{self.name}: line {lineno}: {message}")

    def integer(self, lineno: int, token: str, what: str) -> int:
        try:
            return int(token)
        except ValueError:
            raise self.error(lineno, f"bad {what} {token!r} (expected an integer)") from None


def read_ntu_skeleton(source: PoseSource) -> NtuSkeleton:
    """Read an NTU RGB+D ``.skeleton`` file (local path, fsspec URL or open file object).

    Frames with no body give zero scores; a malformed file raises :class:`PoseFileError`
    naming the file and the line.
    """
    name = source_name(source)
    lines = _Lines(read_text(source), name)
    lineno, parts = lines.next(1, "the frame count")
    num_frames = lines.integer(lineno, parts[0], "frame count")
    if num_frames < 0:
        raise lines.error(lineno, f"negative frame count {num_frames}")

    # Per frame: list of (body_id, joints float64 [25, 11], tracking int [25]).
    frames: list[list[tuple[int, np.ndarray, np.ndarray]]] = []
    for t in range(num_frames):
        lineno, parts = lines.next(1, f"the body count of frame {t + 1}")
        num_bodies = lines.integer(lineno, parts[0], "body count")
        if num_bodies < 0:
            raise lines.error(lineno, f"negative body count {num_bodies}")
        bodies = []
        for b in range(num_bodies):
            lineno, parts = lines.next(10, f"body {b + 1} of frame {t + 1}")
            body_id = lines.integer(lineno, parts[0], "bodyID")
            for token in parts[1:7] + parts[9:10]:
                lines.integer(lineno, token, "body field")
            _floats(lines, lineno, parts[7:9])
            lineno, parts = lines.next(1, f"the joint count of body {b + 1} of frame {t + 1}")
            count = lines.integer(lineno, parts[0], "joint count")
            if count != NUM_JOINTS:
                raise lines.error(lineno, f"expected {NUM_JOINTS} joints, got {count}")
            joints = np.empty((NUM_JOINTS, 11), dtype=np.float64)
            tracking = np.empty(NUM_JOINTS, dtype=np.int64)
            for j in range(NUM_JOINTS):
                lineno, parts = lines.next(12, f"joint {j + 1} of body {b + 1} of frame {t + 1}")
                joints[j] = _floats(lines, lineno, parts[:11])
                state = lines.integer(lineno, parts[11], "trackingState")
                if state not in (0, 1, 2):
                    raise lines.error(lineno, f"trackingState must be 0, 1 or 2, got {state}")
                tracking[j] = state
            bodies.append((body_id, joints, tracking))
        frames.append(bodies)
    if lines.pos < len(lines.items):
        raise lines.error(lines.items[lines.pos][0], "unexpected data after the last frame")

    body_ids: list[int] = []
    slot: dict[int, int] = {}
    for bodies in frames:
        for body_id, _, _ in bodies:
            if body_id not in slot:
                slot[body_id] = len(body_ids)
                body_ids.append(body_id)
    keypoints = np.zeros((num_frames, len(body_ids), NUM_JOINTS, 3), dtype=np.float32)
    xyz = np.zeros((num_frames, len(body_ids), NUM_JOINTS, 3), dtype=np.float32)
    for t, bodies in enumerate(frames):
        for body_id, joints, tracking in bodies:
            p = slot[body_id]  # a body listed twice in a frame: the later entry wins
            keypoints[t, p, :, :2] = joints[:, 5:7]
            keypoints[t, p, :, 2] = _STATE_SCORE[tracking]
            xyz[t, p] = joints[:, :3]
    return NtuSkeleton(frames=num_frames, keypoints=keypoints, body_ids=body_ids, xyz=xyz)


def _floats(lines: _Lines, lineno: int, tokens: list[str]) -> list[float]:
    values = []
    for token in tokens:
        try:
            value = float(token)
        except ValueError:
            raise lines.error(lineno, f"bad number {token!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise lines.error(lineno, f"bad number {token!r} (not finite)")
        values.append(value)
    return values


def write_ntu_skeleton(dest: PoseSource, frames: Sequence[Sequence[NtuBody]]) -> None:
    """Write an NTU ``.skeleton`` file: ``frames[t]`` is the list of bodies seen in frame t.

    Numbers are written as decimals that read back as the same float32, so
    ``read_ntu_skeleton`` returns exactly the float32 values given here.
    """
    bodies = [body for frame in frames for body in frame]
    joints = np.zeros((len(bodies), NUM_JOINTS, 11), dtype=np.float32)
    lean = np.zeros((len(bodies), 2), dtype=np.float32)
    for i, body in enumerate(bodies):
        tracking = np.asarray(body.tracking)
        if np.shape(body.joints) != (NUM_JOINTS, 11) or tracking.shape != (NUM_JOINTS,):
            raise ValueError(f"a body needs joints [{NUM_JOINTS}, 11] and tracking [25]")
        if not np.isin(tracking, (0, 1, 2)).all():
            raise ValueError("trackingState must be 0, 1 or 2")
        joints[i] = body.joints
        lean[i] = body.lean
    # One formatting call for the whole file: per-call overhead dominates otherwise.
    numbers = format_float32_array(joints)
    leans = format_float32_array(lean)

    out = [str(len(frames))]
    i = 0
    for frame in frames:
        out.append(str(len(frame)))
        for body in frame:
            head = (
                body.body_id,
                body.clipped_edges,
                body.hand_left[0],
                body.hand_left[1],
                body.hand_right[0],
                body.hand_right[1],
                body.restricted,
            )
            out.append(
                " ".join(str(int(v)) for v in head)
                + f" {leans[2 * i]} {leans[2 * i + 1]} {int(body.tracking_state)}"
            )
            out.append(str(NUM_JOINTS))
            base = i * NUM_JOINTS * 11
            for j, state in enumerate(np.asarray(body.tracking).tolist()):
                row = numbers[base + 11 * j : base + 11 * j + 11]
                out.append(" ".join(row) + f" {int(state)}")
            i += 1
    write_data(dest, "\n".join(out) + "\n")


def bodies_from_keypoints(keypoints: np.ndarray, body_ids: Sequence[int]) -> list[list[NtuBody]]:
    """Bodies for :func:`write_ntu_skeleton` from keypoints [F, P, 25, 3] (colorX, colorY, score).

    Scores must be 0, 0.5 or 1 (trackingState 0, 1, 2); a person whose scores are all 0 in a
    frame is left out of that frame. Camera-space and depth coordinates are written as 0.
    """
    kp = np.asarray(keypoints, dtype=np.float32)
    if kp.ndim != 4 or kp.shape[2:] != (NUM_JOINTS, 3) or kp.shape[1] != len(body_ids):
        raise ValueError(f"keypoints must be [F, {len(body_ids)}, {NUM_JOINTS}, 3]")
    states = np.rint(kp[..., 2] * 2).astype(np.int64)
    if not np.array_equal(_STATE_SCORE[np.clip(states, 0, 2)], kp[..., 2]):
        raise ValueError("scores must be 0, 0.5 or 1 (Kinect trackingState 0, 1, 2)")
    frames = []
    for t in range(len(kp)):
        bodies = []
        for p, body_id in enumerate(body_ids):
            if not states[t, p].any():
                continue
            joints = np.zeros((NUM_JOINTS, 11), dtype=np.float32)
            joints[:, 5:7] = kp[t, p, :, :2]
            bodies.append(NtuBody(int(body_id), joints, states[t, p]))
        frames.append(bodies)
    return frames
