"""Shared plumbing of the pose file readers and writers: sources, names, errors, numbers.

Every reader takes a local path (``str`` or ``os.PathLike``), an fsspec URL (``s3://...``) or an
open file object (text or binary, as fsspec hands them to the build), so the build never has to
copy a pose file to disk first.
"""

from __future__ import annotations

import io
import os
from typing import IO, Any

import numpy as np

from ..errors import InvalidInput

__all__ = [
    "PoseFileError",
    "PoseSource",
    "source_name",
    "read_bytes",
    "read_text",
    "write_data",
    "format_float32",
]

PoseSource = str | os.PathLike | IO[Any]


class PoseFileError(InvalidInput):
    """A pose file that cannot be read; the message is one line naming the file (and line)."""


def source_name(source: Any) -> str:
    """A name for ``source`` to put in messages: its path, else the file object's name."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    for attr in ("full_name", "path", "name"):
        name = getattr(source, attr, None)
        if isinstance(name, str) and name:
            return name
    return "<stream>"


def _is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def read_bytes(source: PoseSource) -> bytes:
    """The whole content of ``source`` as bytes (text file objects are UTF-8 encoded)."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if _is_url(path):
            import fsspec  # only remote sources need it

            with fsspec.open(path, "rb") as f:
                return f.read()
        if path.startswith("file://"):
            path = path[len("file://") :]
        with open(path, "rb") as f:
            return f.read()
    data = source.read()
    return data.encode("utf-8") if isinstance(data, str) else bytes(data)


def read_text(source: PoseSource) -> str:
    """The whole content of ``source`` decoded as UTF-8 (a BOM is dropped)."""
    data = read_bytes(source)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PoseFileError(
            f"{source_name(source)}: not UTF-8 text (byte {exc.start}: {exc.reason})"
        ) from None


def write_data(dest: PoseSource, data: str | bytes) -> None:
    """Write a whole file: ``data`` goes to a path, a URL or an open file object (text or binary)."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    if isinstance(dest, (str, os.PathLike)):
        path = os.fspath(dest)
        if _is_url(path):
            import fsspec

            with fsspec.open(path, "wb") as f:
                f.write(payload)
            return
        with open(path, "wb") as f:  # binary: the same bytes on every platform
            f.write(payload)
        return
    if isinstance(dest, io.TextIOBase):
        if isinstance(data, bytes):
            raise TypeError("cannot write binary data to a text file object")
        dest.write(data)
    else:
        dest.write(payload)


def format_float32(value: float) -> str:
    """The shortest decimal that reads back as the same float32 (no exponent)."""
    v = np.float32(value)
    if not np.isfinite(v):
        raise ValueError(f"cannot write a non-finite number ({value})")
    return np.format_float_positional(v, unique=True, trim="-")


def format_float32_array(values: Any) -> list[str]:
    """Decimal strings (no exponent) that read back as the same float32s, for many values.

    Tries 7, 8 and then 9 significant digits (9 always round-trips a float32), which is much
    faster than the shortest-digits search of :func:`format_float32` for each value.
    """
    arr = np.asarray(values, dtype=np.float32).ravel()
    if not np.isfinite(arr).all():
        raise ValueError("cannot write a non-finite number")
    as64 = arr.astype(np.float64).tolist()
    out = [f"{v:.7g}" for v in as64]
    for digits in (8, 9):
        back = np.array(out, dtype=np.float64).astype(np.float32)
        bad = np.flatnonzero(back != arr)
        if not len(bad):
            break
        for i in bad.tolist():
            out[i] = f"{as64[i]:.{digits}g}"
    for i, text in enumerate(out):
        if "e" in text:  # keep plain decimals, as the NTU files have
            out[i] = format_float32(arr[i])
    return out
