"""pyskl / mmaction2 skeleton annotation pickles.

Layout (pyskl's ``tools/data/README.md``)::

    {"split": {split name: [frame_dir, ...]},
     "annotations": [{"frame_dir": str, "label": int, "img_shape": (h, w),
                      "original_shape": (h, w), "total_frames": T,
                      "keypoint": float32 [M, T, V, 2],        # pixels of img_shape
                      "keypoint_score": float32 [M, T, V]}, ...]}

The person axis comes first in the file; the reader returns frame-major keypoints
[T, M, V, 3] (x, y, score), the layout of our pose shards.

Reading uses a restricted unpickler that only rebuilds numpy arrays and plain containers, so a
pickle from elsewhere cannot run code. The writer stores arrays as ``numpy.ndarray(shape, dtype,
buffer)`` calls, which load with numpy 1.x and 2.x alike (numpy 2's own array pickles name
``numpy._core`` and do not load with numpy 1.x, which pyskl setups often use).
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.formats._io import PoseFileError, PoseSource, read_bytes, source_name, write_data

__all__ = ["read_mmaction_pickle", "write_mmaction_pickle"]

# Globals a skeleton pickle may name: numpy's array/scalar rebuilders (numpy 1.x and 2.x module
# paths) and harmless builtins. numpy 1.x paths are resolved to numpy 2's when needed.
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "bytearray"),
    ("builtins", "complex"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how protocol 2 pickles of Python 2 era store bytes
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED and not (
            module in ("numpy", "numpy.dtypes") and name.endswith("DType")
        ):
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core.") :]
        return super().find_class(module, name)


class _PortablePickler(pickle.Pickler):
    """Pickles arrays as ``numpy.ndarray(shape, dtype, bytearray)``: loadable by numpy 1 and 2."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, np.ndarray) and obj.dtype.kind in "biuf":
            arr = np.ascontiguousarray(obj)
            return np.ndarray, (arr.shape, arr.dtype.str, bytearray(arr.tobytes()))
        if isinstance(obj, np.generic) and obj.dtype.kind in "biuf":
            return type(obj.item()), (obj.item(),)
        return NotImplemented


def write_mmaction_pickle(
    dest: PoseSource,
    annotations: Iterable[Mapping[str, Any]],
    split: Mapping[str, Sequence[str]],
) -> None:
    """Write a pyskl-layout pickle.

    Each annotation needs ``frame_dir`` (str), ``label`` (int), ``img_shape`` (h, w),
    ``total_frames`` (T), ``keypoint`` float [M, T, V, 2] and ``keypoint_score`` float [M, T, V];
    ``original_shape`` defaults to ``img_shape``; other keys are kept as they are. ``split``
    maps split names to frame_dirs, each of which must be among the annotations.
    """
    out = []
    seen: set[str] = set()
    for ann in annotations:
        frame_dir = ann.get("frame_dir")
        if not isinstance(frame_dir, str) or not frame_dir:
            raise ValueError("each annotation needs a non-empty string 'frame_dir'")
        if frame_dir in seen:
            raise ValueError(f"duplicate frame_dir {frame_dir!r}")
        seen.add(frame_dir)
        for key in ("label", "img_shape", "total_frames", "keypoint", "keypoint_score"):
            if key not in ann:
                raise ValueError(f"{frame_dir}: missing {key!r}")
        kp = np.asarray(ann["keypoint"], dtype=np.float32)
        score = np.asarray(ann["keypoint_score"], dtype=np.float32)
        total = int(ann["total_frames"])
        if kp.ndim != 4 or kp.shape[-1] != 2:
            raise ValueError(f"{frame_dir}: keypoint must be [M, T, V, 2], got {list(kp.shape)}")
        if score.shape != kp.shape[:3]:
            raise ValueError(f"{frame_dir}: keypoint_score must be [M, T, V] = {kp.shape[:3]}")
        if kp.shape[1] != total:
            raise ValueError(f"{frame_dir}: keypoint has {kp.shape[1]} frames, total {total}")
        record = {k: v for k, v in ann.items() if k not in ("keypoint", "keypoint_score")}
        record.update(
            frame_dir=frame_dir,
            label=int(ann["label"]),
            img_shape=_shape(ann["img_shape"], frame_dir, "img_shape"),
            original_shape=_shape(
                ann.get("original_shape", ann["img_shape"]), frame_dir, "original_shape"
            ),
            total_frames=total,
            keypoint=kp,
            keypoint_score=score,
        )
        out.append(record)
    splits = {}
    for name, dirs in split.items():
        missing = [d for d in dirs if d not in seen]
        if missing:
            raise ValueError(f"split {name!r} names unknown frame_dir {missing[0]!r}")
        splits[str(name)] = [str(d) for d in dirs]
    buf = io.BytesIO()
    _PortablePickler(buf, protocol=4).dump({"split": splits, "annotations": out})
    write_data(dest, buf.getvalue())


def _shape(value: Any, frame_dir: str, key: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{frame_dir}: {key} must be (height, width)") from None
    return (h, w)


def read_mmaction_pickle(source: PoseSource) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    """Read a pyskl-layout pickle: frame_dir -> (keypoints float32 [T, M, V, 3], meta).

    ``meta`` holds ``label``, ``img_shape``, ``original_shape``, ``total_frames``, ``splits``
    (the split names listing the sample) and any other keys of the annotation except the
    keypoint arrays. A file that is not such a pickle, or a sample without 2D keypoints and
    scores (pyskl's 3D NTU files, or kpfile-based Kinetics files), raises PoseFileError.
    """
    name = source_name(source)
    data = read_bytes(source)
    try:
        doc = _SafeUnpickler(io.BytesIO(data)).load()
    except Exception as exc:  # any unpickling failure is a broken or foreign file
        raise PoseFileError(
            f"{name}: not a readable pickle ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(doc, Mapping) or "annotations" not in doc:
        raise PoseFileError(f"{name}: missing key 'annotations' (not a pyskl/mmaction pickle)")
    split = doc.get("split", {})
    if not isinstance(split, Mapping):
        raise PoseFileError(f"{name}: 'split' must be a dict of split name -> frame_dirs")
    member: dict[str, list[str]] = {}
    for split_name, dirs in split.items():
        for d in dirs:
            member.setdefault(str(d), []).append(str(split_name))

    result: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}
    for i, ann in enumerate(doc["annotations"]):
        if not isinstance(ann, Mapping) or "frame_dir" not in ann:
            raise PoseFileError(f"{name}: annotations[{i}] has no 'frame_dir'")
        frame_dir = str(ann["frame_dir"])
        where = f"{name}: {frame_dir}"
        if "keypoint" not in ann:
            hint = (
                " (keypoints in a separate raw_file are not supported)" if "raw_file" in ann else ""
            )
            raise PoseFileError(f"{where}: missing 'keypoint'{hint}")
        try:
            kp = np.asarray(ann["keypoint"], dtype=np.float32)
        except (TypeError, ValueError):
            raise PoseFileError(f"{where}: 'keypoint' is not a numeric array") from None
        if kp.ndim != 4 or kp.shape[-1] not in (2, 3):
            raise PoseFileError(f"{where}: 'keypoint' must be [M, T, V, 2], got {list(kp.shape)}")
        if "keypoint_score" not in ann:
            kind = "3D skeleton" if kp.shape[-1] == 3 else "2D keypoints"
            raise PoseFileError(f"{where}: {kind} without 'keypoint_score'; need 2D poses")
        if kp.shape[-1] != 2:
            raise PoseFileError(f"{where}: 'keypoint' must have 2 coordinates, got {kp.shape[-1]}")
        try:
            score = np.asarray(ann["keypoint_score"], dtype=np.float32)
        except (TypeError, ValueError):
            raise PoseFileError(f"{where}: 'keypoint_score' is not a numeric array") from None
        if score.shape != kp.shape[:3]:
            raise PoseFileError(
                f"{where}: keypoint_score shape {list(score.shape)} != {list(kp.shape[:3])}"
            )
        out = np.concatenate([kp, score[..., None]], axis=-1).transpose(1, 0, 2, 3)
        meta = {k: v for k, v in ann.items() if k not in ("keypoint", "keypoint_score")}
        meta.setdefault("total_frames", out.shape[0])
        meta["splits"] = member.get(frame_dir, [])
        result[frame_dir] = (np.ascontiguousarray(out), meta)
    return result
