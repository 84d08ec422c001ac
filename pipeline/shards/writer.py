"""Writing the aligned rgb/pose/raster shards of one shard number, atomically, with webdataset.

Each tar is written by ``webdataset.TarWriter`` on a :class:`pipeline.storage.AtomicFile`, not by
``webdataset.ShardWriter``: the build plans which videos go to which shard number and the three
kinds must stay aligned by number, while ShardWriter rolls over to new shards on its own count
and names them itself. Member metadata is fixed (mtime 0, no user or group, mode 0644) and
members go in as bytes (no re-encoding), so a rebuild is byte-identical.
"""

from __future__ import annotations

import os
import tarfile
from typing import Any

from .. import storage
from .members import KINDS, Sample, encode_sample, shard_name

__all__ = ["ShardSetWriter", "remove_temporaries", "TAR_FORMAT"]

# PAX is tarfile's default and what webdataset writes; for names under 100 characters its
# bytes equal ustar's, and longer keys still fit.
TAR_FORMAT = tarfile.PAX_FORMAT


def _tar_writer(fileobj: Any) -> Any:
    import webdataset as wds  # imports torch: only where shards are written

    writer = wds.TarWriter(
        fileobj, user="", group="", mode=0o644, mtime=0, encoder=False, format="PAX_FORMAT"
    )
    # webdataset 1.0.2 accepts `format` but does not hand it to tarfile.open; set it on the
    # TarFile it opened so that the format stays fixed whatever the library's default becomes.
    writer.tarstream.format = TAR_FORMAT
    return writer


class ShardSetWriter:
    """Writes the shards of one number (every kind in ``kinds``) so that they hold the same keys
    in the same order, and appear under their final names only when :meth:`commit` is called.

    A killed build never leaves a shard that looks complete; a resumed build deletes leftover
    temporary files (:func:`remove_temporaries`).
    """

    def __init__(self, split_url: str, number: int, kinds: tuple[str, ...] = KINDS):
        self.split_url = split_url
        self.number = number
        self.kinds = kinds
        storage.makedirs(split_url)
        self._files = {
            k: storage.AtomicFile(storage.join(split_url, shard_name(k, number))) for k in kinds
        }
        self._tars: dict[str, Any] | None = None  # opened on first use: see _open_tars
        self.bytes = {k: 0 for k in kinds}
        self.keys: list[str] = []

    def _open_tars(self) -> dict[str, Any]:
        # Late, because the first TarWriter imports webdataset and with it torch: seconds of CPU
        # in a fresh Ray worker, which a shard task then spends while the pose actor estimates
        # its first videos instead of before it has sent the actor anything.
        if self._tars is None:
            self._tars = {k: _tar_writer(self._files[k].file) for k in self.kinds}
        return self._tars

    def add(self, sample: Sample) -> int:
        """Add a sample to every shard kind; returns its payload bytes."""
        return self.add_encoded(sample.key, {k: encode_sample(sample, k) for k in self.kinds})

    def add_encoded(self, key: str, members: dict[str, dict[str, bytes]]) -> int:
        """Add a sample whose members are already encoded (kind -> {extension: bytes}), e.g.
        copied from an existing shard; returns its payload bytes."""
        total = 0
        tars = self._open_tars()
        for kind in self.kinds:
            n = tars[kind].write({"__key__": key, **members[kind]})
            self.bytes[kind] += n
            total += n
        self.keys.append(key)
        return total

    def _close_tars(self) -> None:
        for tar in (self._tars or {}).values():
            tar.close()

    def commit(self) -> list[str]:
        """Close the tars and move them to their final names; returns the final URLs."""
        self._open_tars()  # a shard whose every video failed is still a set of valid empty tars
        self._close_tars()
        for atomic in self._files.values():
            atomic.commit()
        return [f.url for f in self._files.values()]

    def abort(self) -> None:
        try:
            self._close_tars()
        finally:
            for atomic in self._files.values():
                atomic.abort()

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
        if name.startswith(storage.TMP_PREFIX):
            os.remove(os.path.join(directory, name))
            removed += 1
    return removed
