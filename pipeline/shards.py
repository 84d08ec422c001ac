"""Shard format v1: encoding one sample into rgb/pose/raster tar members, writing aligned shards
atomically, and reading them back.

Member names (WebDataset groups members by the part of the name before the first dot, so keys
never contain a dot):
  rgb-NNNNNN.tar     KEY.NNNNNN.jpg      one RGB JPEG per kept frame, NNNNNN = source frame index
  pose-NNNNNN.tar    KEY.keypoints.npy   float32 [F, P, K, 3] (x, y, score), stored-frame pixels
                     KEY.frames.npy      int32 [F] source frame index of each kept frame
                     KEY.json            metadata (label, fps, sizes, layout, ...)
  raster-NNNNNN.tar  KEY.raster.npz      heatmaps uint8 [F, K, h, w], pafs int8 [F, 2B, h, w]
Tars are written with fixed member metadata (mtime 0, uid 0), so a rebuild is byte-identical.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import tempfile
import uuid
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from . import storage

__all__ = [
    "KINDS",
    "Sample",
    "shard_name",
    "parse_shard_name",
    "make_key",
    "encode_rgb",
    "encode_pose",
    "encode_raster",
    "write_tar",
    "ShardSetWriter",
    "remove_temporaries",
    "iter_tar",
    "TarCorrupt",
    "group_members",
    "decode_pose",
    "decode_raster",
    "decode_rgb",
    "rgb_frame_members",
]

KINDS = ("rgb", "pose", "raster")
_SHARD_RE = re.compile(r"^(rgb|pose|raster)-(\d{6})\.tar$")
JPEG_QUALITY = 90


def shard_name(kind: str, number: int) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown shard kind {kind!r}")
    return f"{kind}-{number:06d}.tar"


def parse_shard_name(name: str) -> tuple[str, int] | None:
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


def encode_rgb(key: str, frames: np.ndarray, frame_indices: np.ndarray) -> list[tuple[str, bytes]]:
    import simplejpeg

    members = []
    for frame, index in zip(frames, frame_indices, strict=True):
        data = simplejpeg.encode_jpeg(
            np.ascontiguousarray(frame), quality=JPEG_QUALITY, colorspace="RGB"
        )
        members.append((f"{key}.{int(index):06d}.jpg", data))
    return members


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def encode_pose(
    key: str, keypoints: np.ndarray, frame_indices: np.ndarray, meta: dict[str, Any]
) -> list[tuple[str, bytes]]:
    return [
        (f"{key}.keypoints.npy", _npy_bytes(np.asarray(keypoints, dtype=np.float32))),
        (f"{key}.frames.npy", _npy_bytes(np.asarray(frame_indices, dtype=np.int32))),
        (f"{key}.json", json.dumps(meta, sort_keys=True).encode()),
    ]


def encode_raster(key: str, heatmaps: np.ndarray, pafs: np.ndarray) -> list[tuple[str, bytes]]:
    """An .npz (a zip of .npy files, readable by np.load) with fast deflate.

    Rasters are mostly zeros; level 1 compresses them ~20-50x at a fraction of the cost of
    numpy's default level.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, array in (("heatmaps", heatmaps), ("pafs", pafs)):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, _npy_bytes(array), compresslevel=1)
    return [(f"{key}.raster.npz", buf.getvalue())]


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    # Fixed metadata so that rebuilding a shard gives the same bytes.
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def write_tar(fileobj: IO[bytes], members: Iterable[tuple[str, bytes]]) -> int:
    """Write members to an uncompressed tar; returns the payload bytes."""
    total = 0
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            _tar_add(tar, name, data)
            total += len(data)
    return total


TMP_PREFIX = ".tmp-"


class ShardSetWriter:
    """Writes the rgb, pose and raster shards of one shard number, aligned, atomically.

    Local output: members go to hidden temporary files in the split folder, renamed onto their
    final names by ``commit()``. Object storage: members go to local temporary files, uploaded by
    ``commit()`` (an object is visible only once its upload completes). Either way nothing under a
    shard's final name exists before it is whole, so a killed build never leaves a shard that
    looks complete; a resumed build deletes leftover ``.tmp-*`` files.
    """

    def __init__(self, split_url: str, number: int, kinds: tuple[str, ...] = KINDS):
        self.split_url = split_url
        self.number = number
        self.kinds = kinds
        self._remote = storage.is_remote(split_url)
        if self._remote:
            self._dir = tempfile.mkdtemp(prefix=f"shard-{number:06d}-")
        else:
            self._dir = storage.strip_protocol(split_url)
            os.makedirs(self._dir, exist_ok=True)
        tag = uuid.uuid4().hex[:12]
        self._tmp = {
            k: os.path.join(self._dir, f"{TMP_PREFIX}{tag}-{shard_name(k, number)}") for k in kinds
        }
        self._files = {k: open(self._tmp[k], "wb") for k in kinds}
        self._tars = {
            k: tarfile.open(fileobj=self._files[k], mode="w", format=tarfile.USTAR_FORMAT)
            for k in kinds
        }
        self.bytes = {k: 0 for k in kinds}
        self.keys: list[str] = []

    def _add(self, kind: str, members: list[tuple[str, bytes]]) -> int:
        n = 0
        for name, data in members:
            _tar_add(self._tars[kind], name, data)
            n += len(data)
        self.bytes[kind] += n
        return n

    def add(self, sample: Sample) -> int:
        """Add a sample to every shard kind; returns its payload bytes."""
        encoders = {
            "rgb": lambda: encode_rgb(sample.key, sample.frames, sample.frame_indices),
            "pose": lambda: encode_pose(
                sample.key, sample.keypoints, sample.frame_indices, sample.meta
            ),
            "raster": lambda: encode_raster(sample.key, sample.heatmaps, sample.pafs),
        }
        total = sum(self._add(kind, encoders[kind]()) for kind in self.kinds)
        self.keys.append(sample.key)
        return total

    def _close(self) -> None:
        for kind in self.kinds:
            if not self._files[kind].closed:
                self._tars[kind].close()
                self._files[kind].close()

    def commit(self) -> list[str]:
        """Close the tars and move them to their final names; returns the final URLs."""
        self._close()
        urls = []
        for kind in self.kinds:
            url = storage.join(self.split_url, shard_name(kind, self.number))
            if self._remote:
                storage.put_file_atomic(self._tmp[kind], url)
                os.remove(self._tmp[kind])
            else:
                os.replace(self._tmp[kind], storage.strip_protocol(url))
            urls.append(url)
        self._cleanup()
        return urls

    def abort(self) -> None:
        self._close()
        for path in self._tmp.values():
            if os.path.exists(path):
                os.remove(path)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._remote and os.path.isdir(self._dir):
            os.rmdir(self._dir)

    def __enter__(self) -> ShardSetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def remove_temporaries(split_url: str) -> int:
    """Delete temporary files a killed build left in a local split folder; returns how many."""
    if storage.is_remote(split_url):
        return 0
    directory = storage.strip_protocol(split_url)
    if not os.path.isdir(directory):
        return 0
    removed = 0
    for name in os.listdir(directory):
        if name.startswith(TMP_PREFIX):
            os.remove(os.path.join(directory, name))
            removed += 1
    return removed


class TarCorrupt(ValueError):
    """A shard that does not read to its end-of-archive marker (truncated or damaged)."""


_BLOCK = 512


def _read_exact(fileobj: IO[bytes], n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = fileobj.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _header_field(block: bytes, start: int, length: int) -> str:
    return block[start : start + length].split(b"\0", 1)[0].decode("utf-8", "replace")


def _header_size(block: bytes) -> int:
    raw = block[124:136]
    if raw[0] & 0x80:  # GNU base-256 size for members over 8 GiB
        return int.from_bytes(raw[1:], "big")
    text = raw.split(b"\0", 1)[0].strip() or b"0"
    return int(text, 8)


def _pax_path(data: bytes) -> str | None:
    # PAX records: "<length> <key>=<value>\n"
    for record in data.decode("utf-8", "replace").split("\n"):
        _, _, field = record.partition(" ")
        key, sep, value = field.partition("=")
        if sep and key == "path":
            return value
    return None


def iter_tar(fileobj: IO[bytes]) -> Iterator[tuple[str, bytes]]:
    """(member name, bytes) of a tar stream, in order; works on non-seekable streams.

    Stricter than tarfile's stream mode, which takes a truncated or garbled header after the
    first member for the end of the archive: here the archive must end with its zero blocks,
    and anything else raises :class:`TarCorrupt`, so a damaged shard never reads as a shorter
    valid one. Reads ustar, GNU long names and PAX paths (tars written by other tools).
    """
    count = 0
    long_name: str | None = None
    while True:
        header = _read_exact(fileobj, _BLOCK)
        if len(header) < _BLOCK:
            raise TarCorrupt(f"truncated: no end-of-archive marker after {count} members")
        if header.count(0) == _BLOCK:
            return
        try:
            checksum = int(header[148:156].split(b"\0", 1)[0].strip() or b"0", 8)
        except ValueError:
            checksum = -1
        # The checksum field counts as eight spaces in its own sum.
        if checksum != sum(header[:148]) + 8 * 32 + sum(header[156:]):
            raise TarCorrupt(f"corrupt member header after {count} members")
        size = _header_size(header)
        data = _read_exact(fileobj, size)
        padding = -size % _BLOCK
        if len(data) < size or len(_read_exact(fileobj, padding)) < padding:
            raise TarCorrupt(f"truncated inside member {count + 1}")
        kind = header[156:157]
        if kind == b"L":  # GNU long name for the next member
            long_name = data.split(b"\0", 1)[0].decode("utf-8", "replace")
            continue
        if kind in (b"x", b"g"):
            long_name = _pax_path(data) if kind == b"x" else long_name
            continue
        name = _header_field(header, 0, 100)
        prefix = _header_field(header, 345, 155) if header[257:262] == b"ustar" else ""
        if prefix:
            name = f"{prefix}/{name}"
        if long_name is not None:
            name, long_name = long_name, None
        count += 1
        if kind in (b"0", b"\0", b"7"):
            yield name, data


def group_members(members: Iterable[tuple[str, bytes]]) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Group consecutive members by key (the name up to the first dot), as WebDataset does."""
    key: str | None = None
    group: dict[str, bytes] = {}
    for name, data in members:
        base = os.path.basename(name)
        k, _, ext = base.partition(".")
        if k != key and key is not None:
            yield key, group
            group = {}
        key = k
        group[ext] = data
    if key is not None:
        yield key, group


def _load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def decode_pose(group: dict[str, bytes]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(keypoints float32 [F, P, K, 3], source frame indices int32 [F], metadata)."""
    return (
        _load_npy(group["keypoints.npy"]),
        _load_npy(group["frames.npy"]),
        json.loads(group["json"]),
    )


def decode_raster(group: dict[str, bytes]) -> tuple[np.ndarray, np.ndarray]:
    """(heatmaps uint8 [F, K, h, w], pafs int8 [F, 2B, h, w])."""
    with np.load(io.BytesIO(group["raster.npz"]), allow_pickle=False) as npz:
        return npz["heatmaps"], npz["pafs"]


def rgb_frame_members(group: dict[str, bytes]) -> list[tuple[int, str]]:
    """(source frame index, member extension) of each JPEG frame, in frame order."""
    out = []
    for ext in group:
        index, _, suffix = ext.partition(".")
        if suffix == "jpg" and index.isdigit():
            out.append((int(index), ext))
    return sorted(out)


def decode_rgb(group: dict[str, bytes], frame_indices: Iterable[int] | None = None) -> np.ndarray:
    """RGB uint8 [F, H, W, 3] of the requested source frames (all kept frames when None)."""
    import simplejpeg

    if frame_indices is None:
        exts = [ext for _, ext in rgb_frame_members(group)]
    else:
        exts = [f"{int(i):06d}.jpg" for i in frame_indices]
    return np.stack([simplejpeg.decode_jpeg(group[ext], colorspace="RGB") for ext in exts])
