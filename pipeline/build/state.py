"""The state of a build in ``OUT/_build/``: what it was asked for and which shards are done.

``options.json`` holds the content fingerprint (options that decide the output, the class list,
a digest of the shard plan, the pipeline version); a rerun with another fingerprint is refused
unless ``--overwrite``. One record per finished shard (``{split}/NNNNNN.json``) is written after
the shard's three tars are in place, so a shard is done exactly when its record and tars exist.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .. import storage
from ..shards import DATASET_JSON, KINDS, shard_name
from .options import BuildError, BuildOptions
from .work import BUILD_DIR, ShardRecord, record_url

__all__ = [
    "options_url",
    "check_output",
    "clear_output",
    "probe_writable",
    "save_fingerprint",
    "done_shards",
    "read_record",
]


def options_url(out: str) -> str:
    return storage.join(out, BUILD_DIR, "options.json")


def check_output(options: BuildOptions, fingerprint: dict[str, Any]) -> bool:
    """Check ``--out`` holds nothing or this same build (reads only); returns whether there is
    a build to delete first (``--overwrite``)."""
    out = options.out
    entries = [e for e in storage.listdir(out) if not e.startswith(".")]
    is_build = BUILD_DIR in entries or DATASET_JSON in entries
    if entries and not is_build:
        raise BuildError(
            f"--out {out} is not empty and holds no pipeline build; choose an empty folder"
        )
    if options.retry_errors and not is_build:
        raise BuildError(f"--retry-errors: --out {out} holds no build to retry")
    if not is_build:
        return False
    if options.overwrite:
        return True
    if not storage.exists(options_url(out)):
        raise BuildError(
            f"--out {out} holds a build without {BUILD_DIR}/options.json; use --overwrite"
        )
    previous = json.loads(storage.read_bytes(options_url(out)))
    if previous != fingerprint:
        diff = sorted(
            k for k in set(previous) | set(fingerprint) if previous.get(k) != fingerprint.get(k)
        )
        raise BuildError(
            f"--out {out} holds a different build ({', '.join(diff)} differ); "
            "use --overwrite to replace it or choose another --out"
        )
    return False


def clear_output(out: str) -> None:
    """Delete everything in ``out`` (``--overwrite``, once the setup checks passed)."""
    for entry in storage.listdir(out):
        storage.remove(storage.join(out, entry), recursive=True)


def probe_writable(out: str) -> None:
    """Write and delete a small file in ``out``: refuse a build whose output cannot be written
    before any work is done (BuildError with the root cause)."""
    from ..errors import describe

    probe = storage.join(out, f"{storage.TMP_PREFIX}write-probe")
    created = None
    if not storage.is_remote(out):
        # The first folder of the path that does not exist yet: removed again after the probe,
        # so that a build whose setup fails leaves nothing behind.
        path = os.path.abspath(storage.strip_protocol(out))
        while not os.path.exists(path):
            created, path = path, os.path.dirname(path)
    try:
        storage.makedirs(out)
        storage.write_bytes_atomic(probe, b"")
        storage.remove(probe)
    except Exception as exc:  # any storage error: permissions, bucket, credentials, endpoint
        raise BuildError(f"--out {out} cannot be written: {describe(exc)}") from None
    finally:
        if created is not None and os.path.isdir(created):
            import shutil

            shutil.rmtree(created, ignore_errors=True)


def save_fingerprint(out: str, fingerprint: dict[str, Any]) -> None:
    storage.makedirs(out)
    data = json.dumps(fingerprint, sort_keys=True).encode()
    storage.write_bytes_atomic(options_url(out), data)


def done_shards(out: str, split: str) -> set[int]:
    """Shard numbers of ``split`` whose record and three tars exist."""
    done = set()
    for name in storage.listdir(storage.join(out, BUILD_DIR, split)):
        stem, ext = os.path.splitext(name)
        if ext == ".json" and stem.isdigit():
            done.add(int(stem))
    present = set(storage.listdir(storage.join(out, split)))
    # A record without its three tars (deleted by hand) is not done.
    return {n for n in done if all(shard_name(k, n) in present for k in KINDS)}


def read_record(out: str, split: str, number: int) -> ShardRecord | None:
    url = record_url(out, split, number)
    if not storage.exists(url):
        return None
    return ShardRecord.from_json(storage.read_bytes(url))
