"""Local paths and fsspec URLs (s3://, gs://, ...) behind one small set of helpers.

Every read and write of the pipeline and the trainer goes through here, so that local disk and
object storage behave the same: a file appears under its final name only when complete.
S3 credentials and endpoint come from the usual AWS variables (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION) plus AWS_ENDPOINT_URL / FSSPEC_S3_ENDPOINT_URL for
S3-compatible servers.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import fsspec

from .errors import InvalidInput, UserError, describe

__all__ = [
    "check_output_file",
    "write_output_file",
    "new_file_mode",
    "is_remote",
    "join",
    "get_fs",
    "exists",
    "isdir",
    "listdir",
    "open_file",
    "read_bytes",
    "write_bytes_atomic",
    "atomic_local_target",
    "AtomicFile",
    "TMP_PREFIX",
    "put_file_atomic",
    "remove",
    "local_copy",
    "makedirs",
    "storage_env",
    "strip_protocol",
]

# Variables that carry object-storage credentials and endpoints to remote Ray workers.
_STORAGE_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_PROFILE",
    "FSSPEC_S3_ENDPOINT_URL",
    "FSSPEC_S3_KEY",
    "FSSPEC_S3_SECRET",
    "INTEGRALACTION_CACHE",
)


def is_remote(url: str | os.PathLike) -> bool:
    url = str(url)
    return "://" in url and not url.startswith("file://")


def strip_protocol(url: str | os.PathLike) -> str:
    url = str(url)
    if url.startswith("file://"):
        return url[len("file://") :]
    return url


def join(base: str | os.PathLike, *parts: str) -> str:
    base = str(base)
    if is_remote(base):
        return posixpath.join(base.rstrip("/"), *parts)
    return os.path.join(strip_protocol(base), *parts)


def _s3_options() -> dict:
    endpoint = os.environ.get("FSSPEC_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
    return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}


def get_fs(url: str | os.PathLike) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for ``url`` and the path within it."""
    url = str(url)
    if not is_remote(url):
        return fsspec.filesystem("file"), os.path.abspath(strip_protocol(url))
    protocol = url.split("://", 1)[0]
    options = _s3_options() if protocol in ("s3", "s3a") else {}
    try:
        fs, path = fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:
        raise UserError(
            f"{protocol}:// needs an extra package ({exc}); install with "
            "pip install 'integralaction[s3]'"
        ) from None
    return fs, path


def exists(url: str | os.PathLike) -> bool:
    fs, path = get_fs(url)
    return fs.exists(path)


def isdir(url: str | os.PathLike) -> bool:
    fs, path = get_fs(url)
    return fs.isdir(path)


def listdir(url: str | os.PathLike) -> list[str]:
    """Names (not paths) of the entries directly under ``url``; empty if it does not exist."""
    fs, path = get_fs(url)
    if not fs.exists(path):
        return []
    if is_remote(url):
        fs.invalidate_cache(path)
    return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))


def open_file(url: str | os.PathLike, mode: str = "rb") -> IO:
    fs, path = get_fs(url)
    return fs.open(path, mode)


def read_bytes(url: str | os.PathLike) -> bytes:
    with open_file(url, "rb") as f:
        return f.read()


# Prefix of the temporary names of unfinished writes; a resumed build deletes leftovers.
TMP_PREFIX = ".tmp-"


def _temporary_beside(final_path: str) -> str:
    directory = os.path.dirname(final_path) or "."
    os.makedirs(directory, exist_ok=True)
    name = f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{os.path.basename(final_path)}"
    return os.path.join(directory, name)


@contextlib.contextmanager
def atomic_local_target(final_path: str) -> Iterator[str]:
    """A temporary path beside ``final_path`` that is renamed onto it when the block succeeds."""
    tmp = _temporary_beside(final_path)
    try:
        yield tmp
        os.replace(tmp, final_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def put_file_atomic(local_path: str, url: str | os.PathLike) -> None:
    """Copy a complete local file to ``url`` so that it appears there only when whole.

    Local targets use a temporary name plus rename; object stores only show an object once its
    (multipart) upload completes, so a plain put is already atomic there.
    """
    url = str(url)
    if is_remote(url):
        fs, path = get_fs(url)
        fs.put_file(local_path, path)
        return
    final = strip_protocol(url)
    with atomic_local_target(final) as tmp:
        shutil.copyfile(local_path, tmp)


class AtomicFile:
    """A binary file that appears at ``url`` only when :meth:`commit` is called.

    Local targets are written under a hidden temporary name in the target's folder and renamed;
    remote targets are written to a local temporary file and uploaded on commit (an object
    store shows an object only once its upload completes). :meth:`abort` (or an exception in a
    ``with`` block) deletes the temporary file, so nothing half-written ever has the final name.
    """

    def __init__(self, url: str | os.PathLike) -> None:
        self.url = str(url)
        self._remote = is_remote(self.url)
        if self._remote:
            fd, self._tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=posixpath.basename(self.url))
            self.file: IO[bytes] = os.fdopen(fd, "wb")
        else:
            self._tmp = _temporary_beside(strip_protocol(self.url))
            self.file = open(self._tmp, "wb")  # closed by commit() or abort()

    def commit(self) -> None:
        self.file.close()
        try:
            if self._remote:
                fs, path = get_fs(self.url)
                fs.put_file(self._tmp, path)
            else:
                os.replace(self._tmp, strip_protocol(self.url))
        finally:
            if os.path.exists(self._tmp):
                os.remove(self._tmp)

    def abort(self) -> None:
        self.file.close()
        if os.path.exists(self._tmp):
            os.remove(self._tmp)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_bytes_atomic(url: str | os.PathLike, data: bytes) -> None:
    url = str(url)
    if is_remote(url):
        fs, path = get_fs(url)
        fs.pipe_file(path, data)
        return
    with atomic_local_target(strip_protocol(url)) as tmp, open(tmp, "wb") as f:
        f.write(data)


def remove(url: str | os.PathLike, recursive: bool = False) -> None:
    fs, path = get_fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)


def makedirs(url: str | os.PathLike) -> None:
    if not is_remote(url):
        os.makedirs(strip_protocol(url), exist_ok=True)


@contextlib.contextmanager
def local_copy(url: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """A local file path holding the content of ``url`` (the path itself when it is local)."""
    url = str(url)
    if not is_remote(url):
        yield strip_protocol(url)
        return
    fd, tmp = tempfile.mkstemp(suffix=suffix or Path(url).suffix)
    os.close(fd)
    try:
        fs, path = get_fs(url)
        fs.get_file(path, tmp)
        yield tmp
    finally:
        os.remove(tmp)


def storage_env() -> dict[str, str]:
    """The storage variables set in this process, to hand to remote workers."""
    return {k: os.environ[k] for k in _STORAGE_ENV if k in os.environ}


def check_output_file(out: str | None, option: str = "-o") -> None:
    """Fail before any work when a local ``out`` cannot be a file: its folder cannot be made (a
    file is in the way, no permission) or ``out`` is a folder. A bucket's errors come with the
    write; an optional output not asked for (None) has nothing to check."""
    if not out or is_remote(out):
        return
    path = os.path.abspath(strip_protocol(out))
    if os.path.isdir(path):
        raise InvalidInput(f"{option} {out} is a folder; give a file name")
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"{option} {out}: cannot create its folder ({describe(exc)})") from None


def write_output_file(out: str, data: bytes, option: str = "-o") -> None:
    """:func:`write_bytes_atomic` for a command's output: a storage error is the user's path."""
    try:
        write_bytes_atomic(out, data)
    except OSError as exc:
        raise InvalidInput(f"{option} {out} cannot be written: {describe(exc)}") from None


def new_file_mode() -> int:
    """The mode open() gives a new file under this process's umask: for files written through
    a temporary from ``tempfile.mkstemp`` (always 0600), so that a shared run folder's
    checkpoints are as readable as its logs."""
    try:  # Linux says it without the umask(0) round trip, during which other threads'
        # new files would be world-writable.
        with open("/proc/self/status") as f:
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0)
        os.umask(umask)
    return 0o666 & ~umask
