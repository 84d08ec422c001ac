"""ST-GCN's kinetics-skeleton JSON: one file per video, OpenPose-18 poses per frame.

The file (yysijie/st-gcn's Kinetics release) is::

    {"data": [{"frame_index": 1,
               "skeleton": [{"pose": [x0, y0, x1, y1, ... 18 joints],
                             "score": [s0, ... 18 scores]}, ...]},
              ...],
     "label": "class name", "label_index": 0}

``frame_index`` is 1-based; ``"skeleton": []`` marks a frame without a person; a joint that
OpenPose did not find is written as ``0, 0`` with score 0.

Coordinates. The file holds x and y normalised to 0..1 of the frame the poses were made from. We
use the mapping ``x_file = x_px / width`` and ``y_file = y_px / height`` where ``x_px, y_px`` are
pixel coordinates with pixel centres at integers (the contract's convention), and the reader
inverts it as ``x_px = x_file * width``. The writer stores ``x_px / width`` computed in float64
with every digit Python's ``repr`` gives, so a float32 pixel coordinate written and read back with
the same width and height is the same float32 (exactly). Scores are written as the shortest
decimal that reads back as the same float32.
"""

from __future__ import annotations

import json
import math
from typing import Any, NamedTuple

import numpy as np

from pipeline.formats._io import (
    PoseFileError,
    PoseSource,
    format_float32,
    read_text,
    source_name,
    write_data,
)

__all__ = ["KineticsSkeleton", "read_kinetics_skeleton", "write_kinetics_skeleton", "NUM_JOINTS"]

NUM_JOINTS = 18  # OpenPose-18 (the contract's ``openpose18`` layout)


class KineticsSkeleton(NamedTuple):
    """What a kinetics-skeleton file holds, in pixels.

    ``frame_index`` int64 [N]: the file's 1-based frame indices, in file order.
    ``keypoints`` float32 [N, P, 18, 3]: (x, y, score) in pixels; P is the most persons in any
    frame, persons in file order, zeros where a frame has fewer persons.
    ``label``: the file's label, or None when it has none.
    """

    frame_index: np.ndarray
    keypoints: np.ndarray
    label: str | None


def _fail(name: str, message: str) -> PoseFileError:
    return PoseFileError(f"{name}: {message}")


def _numbers(value: Any, count: int, name: str, where: str) -> np.ndarray:
    if not isinstance(value, list) or len(value) != count:
        got = f"{len(value)} values" if isinstance(value, list) else type(value).__name__
        raise _fail(name, f"{where}: expected a list of {count} numbers, got {got}")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise _fail(name, f"{where}: expected numbers") from None
    if arr.shape != (count,):
        raise _fail(name, f"{where}: expected a list of {count} numbers")
    return arr


def read_kinetics_skeleton(source: PoseSource, width: int, height: int) -> KineticsSkeleton:
    """Read a kinetics-skeleton JSON file into pixel coordinates of a ``width`` x ``height`` frame.

    ``source``: a local path, an fsspec URL or an open file object. Malformed JSON, missing keys
    or wrong lengths raise :class:`PoseFileError` naming the file (and the line, for JSON syntax
    errors).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    name = source_name(source)
    text = read_text(source)
    try:
        # NaN/Infinity are not JSON; a file with them is as broken as one with a syntax error.
        doc = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _fail(
            name, f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except ValueError as exc:
        raise _fail(name, str(exc)) from None
    if not isinstance(doc, dict):
        raise _fail(name, f"expected a JSON object at the top level, got {type(doc).__name__}")
    if "data" not in doc:
        raise _fail(name, "missing key 'data'")
    data = doc["data"]
    if not isinstance(data, list):
        raise _fail(name, f"'data' must be a list, got {type(data).__name__}")

    frame_index = np.zeros(len(data), dtype=np.int64)
    frames: list[list[np.ndarray]] = []
    for i, entry in enumerate(data):
        where = f"data[{i}]"
        if not isinstance(entry, dict):
            raise _fail(name, f"{where}: expected an object, got {type(entry).__name__}")
        for key in ("frame_index", "skeleton"):
            if key not in entry:
                raise _fail(name, f"{where}: missing key '{key}'")
        index = entry["frame_index"]
        if isinstance(index, bool) or not isinstance(index, int) or index < 1:
            raise _fail(name, f"{where}: frame_index must be an integer >= 1, got {index!r}")
        frame_index[i] = index
        people = entry["skeleton"]
        if not isinstance(people, list):
            raise _fail(name, f"{where}: 'skeleton' must be a list")
        persons = []
        for j, person in enumerate(people):
            pwhere = f"{where}.skeleton[{j}]"
            if not isinstance(person, dict):
                raise _fail(name, f"{pwhere}: expected an object")
            for key in ("pose", "score"):
                if key not in person:
                    raise _fail(name, f"{pwhere}: missing key '{key}'")
            pose = _numbers(person["pose"], 2 * NUM_JOINTS, name, f"{pwhere}.pose")
            score = _numbers(person["score"], NUM_JOINTS, name, f"{pwhere}.score")
            kp = np.empty((NUM_JOINTS, 3), dtype=np.float64)
            kp[:, 0] = pose[0::2] * width
            kp[:, 1] = pose[1::2] * height
            kp[:, 2] = score
            persons.append(kp.astype(np.float32))
        frames.append(persons)

    num_persons = max((len(p) for p in frames), default=0)
    keypoints = np.zeros((len(frames), num_persons, NUM_JOINTS, 3), dtype=np.float32)
    for i, persons in enumerate(frames):
        for j, kp in enumerate(persons):
            keypoints[i, j] = kp
    label = doc.get("label")
    return KineticsSkeleton(frame_index, keypoints, label if isinstance(label, str) else None)


def _reject_constant(token: str) -> float:
    raise ValueError(f"non-finite number {token} is not valid JSON")


def write_kinetics_skeleton(
    dest: PoseSource,
    keypoints: np.ndarray,
    width: int,
    height: int,
    frame_index: np.ndarray | None = None,
    label: str | None = None,
    label_index: int | None = None,
) -> None:
    """Write ``keypoints`` float [N, P, 18, 3] (x, y, score; pixels) as a kinetics-skeleton file.

    ``frame_index`` defaults to 1..N. As in ST-GCN's files, a joint with score <= 0 is written as
    ``0, 0`` with score 0, and a person with no joint above 0 is left out of that frame (so a
    frame without persons has ``"skeleton": []``). One frame per line, so that a reader's error
    names a useful line. ``label`` and ``label_index`` are written when given.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    kp = np.asarray(keypoints, dtype=np.float32)
    if kp.ndim != 4 or kp.shape[2:] != (NUM_JOINTS, 3):
        raise ValueError(f"keypoints must be [N, P, {NUM_JOINTS}, 3], got {list(kp.shape)}")
    if frame_index is None:
        frame_index = np.arange(1, len(kp) + 1)
    frame_index = np.asarray(frame_index)
    if frame_index.shape != (len(kp),):
        raise ValueError("frame_index must have one entry per frame")
    if len(kp) and int(frame_index.min()) < 1:
        raise ValueError("frame_index is 1-based")

    lines = []
    for t in range(len(kp)):
        people = []
        for person in kp[t]:
            visible = person[:, 2] > 0
            if not visible.any():
                continue
            pose, score = [], []
            for (x, y, s), vis in zip(person.tolist(), visible.tolist(), strict=True):
                if vis:
                    if not (math.isfinite(x) and math.isfinite(y)):
                        raise ValueError(f"frame {t}: non-finite coordinate of a visible joint")
                    pose += [repr(x / width), repr(y / height)]
                    score.append(format_float32(s))
                else:
                    pose += ["0", "0"]
                    score.append("0")
            people.append(f'{{"pose": [{", ".join(pose)}], "score": [{", ".join(score)}]}}')
        lines.append(f'{{"frame_index": {int(frame_index[t])}, "skeleton": [{", ".join(people)}]}}')
    tail = []
    if label is not None:
        tail.append(f'"label": {json.dumps(label)}')
    if label_index is not None:
        tail.append(f'"label_index": {int(label_index)}')
    body = ",\n".join(lines)
    text = '{"data": [\n' + body + ("\n" if lines else "") + "]"
    text += "".join(", " + item for item in tail) + "}\n"
    write_data(dest, text)
