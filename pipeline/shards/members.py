"""The members of one sample in each shard kind: names, encoding and decoding (shard format v1).

Member names (WebDataset groups members by the part of the name before the first dot, so keys
never contain a dot):

  rgb-NNNNNN.tar     KEY.NNNNNN.jpg      one RGB JPEG per kept frame, NNNNNN = source frame index
  pose-NNNNNN.tar    KEY.keypoints.npy   float32 [F, P, K, 3] (x, y, score), stored-frame pixels
                     KEY.frames.npy      int32 [F] source frame index of each kept frame
                     KEY.json            metadata (label, fps, sizes, layout, ...)
  raster-NNNNNN.tar  KEY.raster.npz      heatmaps uint8 [F, K, h, w], pafs int8 [F, 2B, h, w]

Encoders return ``{extension: bytes}`` (a webdataset sample without its ``__key__``); decoders
take a sample as webdataset's tar reader groups it, with the members still as bytes or already
decoded by :func:`decode_members`.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "KINDS",
    "POSE_MEMBERS",
    "RASTER_MEMBERS",
    "JPEG_QUALITY",
    "Sample",
    "shard_name",
    "parse_shard_name",
    "make_key",
    "encode_rgb",
    "encode_pose",
    "encode_raster",
    "encode_sample",
    "kind_of_member",
    "split_members",
    "decode_members",
    "decode_pose",
    "decode_raster",
    "decode_rgb",
    "rgb_frame_members",
]

KINDS = ("rgb", "pose", "raster")
POSE_MEMBERS = frozenset({"keypoints.npy", "frames.npy", "json"})
RASTER_MEMBERS = frozenset({"raster.npz"})
_SHARD_RE = re.compile(r"^(rgb|pose|raster)-(\d{6})\.tar$")
JPEG_QUALITY = 90


def shard_name(kind: str, number: int) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown shard kind {kind!r}")
    return f"{kind}-{number:06d}.tar"


def parse_shard_name(name: str) -> tuple[str, int] | None:
    """(kind, number) of a shard file name or URL; None for any other name."""
    m = _SHARD_RE.match(os.path.basename(name))
    return (m.group(1), int(m.group(2))) if m else None


def make_key(stem: str) -> str:
    """The sample key of a video file stem: dots replaced (WebDataset splits keys at dots)."""
    return stem.replace(".", "_")


@dataclass
class Sample:
    """One video, ready to be written."""

    key: str
    frames: np.ndarray  # uint8 [F, H, W, 3] RGB, stored size
    frame_indices: np.ndarray  # int [F] source frame index of each kept frame
    keypoints: np.ndarray  # float32 [F, P, K, 3] stored-frame pixels
    heatmaps: np.ndarray  # uint8 [F, K, H/4, W/4]
    pafs: np.ndarray  # int8 [F, 2B, H/4, W/4]
    meta: dict[str, Any] = field(default_factory=dict)


def encode_rgb(frames: np.ndarray, frame_indices: np.ndarray) -> dict[str, bytes]:
    import simplejpeg

    return {
        f"{int(index):06d}.jpg": simplejpeg.encode_jpeg(
            np.ascontiguousarray(frame), quality=JPEG_QUALITY, colorspace="RGB"
        )
        for frame, index in zip(frames, frame_indices, strict=True)
    }


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def encode_pose(
    keypoints: np.ndarray, frame_indices: np.ndarray, meta: dict[str, Any]
) -> dict[str, bytes]:
    return {
        "keypoints.npy": _npy_bytes(np.asarray(keypoints, dtype=np.float32)),
        "frames.npy": _npy_bytes(np.asarray(frame_indices, dtype=np.int32)),
        "json": json.dumps(meta, sort_keys=True).encode(),
    }


def encode_raster(heatmaps: np.ndarray, pafs: np.ndarray) -> dict[str, bytes]:
    """An .npz (a zip of .npy files, readable by np.load) with fast deflate.

    Rasters are mostly zeros; level 1 compresses them ~20-50x at a fraction of the cost of
    numpy's default level. Fixed zip timestamps keep rebuilds byte-identical.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, array in (("heatmaps", heatmaps), ("pafs", pafs)):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, _npy_bytes(array), compresslevel=1)
    return {"raster.npz": buf.getvalue()}


def kind_of_member(extension: str) -> str:
    """The shard kind a member belongs to, from its extension (``000012.jpg`` -> rgb)."""
    if extension in POSE_MEMBERS:
        return "pose"
    if extension in RASTER_MEMBERS:
        return "raster"
    if extension.endswith(".jpg"):
        return "rgb"
    raise ValueError(f"not a member of shard format v1: {extension!r}")


def split_members(sample: Mapping[str, Any]) -> dict[str, dict[str, bytes]]:
    """A merged sample (members of several kinds) -> kind -> {extension: bytes}."""
    out: dict[str, dict[str, bytes]] = {}
    for name, data in sample.items():
        if not name.startswith("_"):
            out.setdefault(kind_of_member(name), {})[name] = data
    return out


def encode_sample(sample: Sample, kind: str) -> dict[str, bytes]:
    """The members of ``sample`` in the shard of ``kind``."""
    if kind == "rgb":
        return encode_rgb(sample.frames, sample.frame_indices)
    if kind == "pose":
        return encode_pose(sample.keypoints, sample.frame_indices, sample.meta)
    if kind == "raster":
        return encode_raster(sample.heatmaps, sample.pafs)
    raise ValueError(f"unknown shard kind {kind!r}")


# --------------------------------------------------------------------------------- decoding


def _load_npy(data: bytes | np.ndarray) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data
    return np.load(io.BytesIO(data), allow_pickle=False)


def _load_npz(data: bytes | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if isinstance(data, Mapping):
        return dict(data)
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def _load_json(data: bytes | dict[str, Any]) -> dict[str, Any]:
    return data if isinstance(data, dict) else json.loads(data)


def decode_members(sample: dict[str, Any]) -> dict[str, Any]:
    """Decode the pose and raster members of a sample in place; JPEG frames stay bytes.

    Frames are decoded later, only those a clip reads. Only the project's own member types
    are decoded (no pickle, unlike webdataset's default decoders).
    """
    for name, data in list(sample.items()):
        if name.startswith("_"):
            continue
        if name.endswith(".npy"):
            sample[name] = _load_npy(data)
        elif name.endswith(".npz"):
            sample[name] = _load_npz(data)
        elif name == "json":
            sample[name] = _load_json(data)
    return sample


def decode_pose(sample: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(keypoints float32 [F, P, K, 3], source frame indices int32 [F], metadata)."""
    return (
        _load_npy(sample["keypoints.npy"]),
        _load_npy(sample["frames.npy"]),
        _load_json(sample["json"]),
    )


def decode_raster(sample: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(heatmaps uint8 [F, K, h, w], pafs int8 [F, 2B, h, w])."""
    arrays = _load_npz(sample["raster.npz"])
    return arrays["heatmaps"], arrays["pafs"]


def rgb_frame_members(sample: Iterable[str]) -> list[tuple[int, str]]:
    """(source frame index, member extension) of each JPEG frame, in frame order."""
    out = []
    for ext in sample:
        index, _, suffix = ext.partition(".")
        if suffix == "jpg" and index.isdigit():
            out.append((int(index), ext))
    return sorted(out)


def decode_rgb(sample: Mapping[str, Any], frame_indices: Iterable[int] | None = None) -> np.ndarray:
    """RGB uint8 [F, H, W, 3] of the requested source frames (all kept frames when None)."""
    import simplejpeg

    if frame_indices is None:
        exts = [ext for _, ext in rgb_frame_members(sample)]
    else:
        exts = [f"{int(i):06d}.jpg" for i in frame_indices]
    return np.stack([simplejpeg.decode_jpeg(sample[ext], colorspace="RGB") for ext in exts])
