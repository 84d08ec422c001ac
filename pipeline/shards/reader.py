"""Reading aligned shards as ``webdataset`` pipeline stages.

The library does the streaming: shard lists (``ResampledShards`` for training, a plain list split
by rank and worker for evaluation), ``tarfile_to_samples`` (tar iteration and grouping of members
by key), ``shuffle``, ``decode``, ``batched`` and ``with_epoch``. What it cannot do is here, each
a small stage or helper with the reason beside it:

- reading the rgb/pose/raster shards of one number in lockstep (one sample carries the members
  of every kind the reader asked for) and refusing shards whose keys differ;
- integrity against the index: webdataset reads tars with tarfile's stream mode, which takes a
  truncated or garbled header for the end of the archive, so a damaged shard could read as a
  shorter valid one. Every shard's sample count and every sample's members are checked against
  ``index.parquet``; a shard that fails is logged and its unchecked tail dropped;
- opening ``s3://`` and other fsspec URLs in-process through :mod:`pipeline.storage` (webdataset's
  ``gopen`` runs ``curl``/``gsutil`` subprocesses and has no ``s3://`` handler; the credentials and
  endpoint handling of the loopback S3 tests and of users' AWS variables live in storage), and
  a local copy of remote shards on request (``cache_dir``);
- seeds for every (seed, epoch, rank, worker), so a resumed training run sees exactly the data an
  uninterrupted one would have seen from that epoch on.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import storage
from ..errors import InvalidInput, UserError, root_cause
from .members import POSE_MEMBERS, RASTER_MEMBERS, parse_shard_name, rgb_frame_members, shard_name

__all__ = [
    "ErrorLog",
    "ShardMismatchError",
    "SHARD_ERRORS",
    "REMOTE_BLOCK_SIZE",
    "register_fsspec_opener",
    "shard_source",
    "aligned_samples",
    "decode_stage",
    "stream_seed",
    "TarDamaged",
    "scan_tar",
]

# Bytes s3fs fetches per request when streaming a shard: large sequential reads.
REMOTE_BLOCK_SIZE = 16 * 2**20
# fsspec protocols whose URLs webdataset should open through pipeline.storage.
FSSPEC_SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "memory")


class ShardMismatchError(UserError, RuntimeError):
    """Aligned shards of one number hold different keys: the dataset is inconsistent."""


class IntegrityError(InvalidInput):
    """A shard or sample that disagrees with the index (damaged or incomplete)."""


# What a damaged shard or sample raises while it is read and decoded: unreadable file or object
# (OSError, missing included), bad tar, npy/npz/json (ValueError and subclasses: tarfile's
# ReadError is not one, hence TarError), missing members (KeyError). Anything else is a bug.
def _shard_errors() -> tuple[type[BaseException], ...]:
    import tarfile
    import zipfile

    return (tarfile.TarError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError)


SHARD_ERRORS: tuple[type[BaseException], ...] = _shard_errors()


@dataclass
class ErrorLog:
    """Errors a worker saw since it last handed a batch on (shards and samples skipped)."""

    pending: list[str] = field(default_factory=list)
    # Samples lost with those errors: a damaged shard loses every sample it had left, so a
    # trainer can weigh the damage against the samples it read (--max-read-error-fraction).
    lost: int = 0
    # Samples read whole over the same shard draws: the measure ``lost`` is weighed against. A
    # resampled training stream draws a damaged shard again and again, and its shuffle buffers
    # read more than the steps use, so the clips trained on are not the same measure.
    read: int = 0
    _warned: set[str] = field(default_factory=set)

    def add(self, what: str, exc: BaseException, lost: int = 1) -> None:
        cause = root_cause(exc)
        message = (
            f"{what}: {type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
        )
        self.pending.append(message.rstrip(": "))
        self.lost += lost
        if what not in self._warned:  # resampling meets a bad shard again and again
            self._warned.add(what)
            warnings.warn(f"skipped {message}", RuntimeWarning, stacklevel=2)

    def drain(self) -> tuple[list[str], int, int]:
        """The errors logged since the last call, the samples lost with them, and the samples
        read whole meanwhile."""
        out, self.pending = self.pending, []
        lost, self.lost = self.lost, 0
        read, self.read = self.read, 0
        return out, lost, read


# ---------------------------------------------------------------------------------- opening


def _gopen_fsspec(url: str, mode: str = "rb", bufsize: int = 8192, **_: Any):
    fs, path = storage.get_fs(url)
    return fs.open(path, mode, block_size=REMOTE_BLOCK_SIZE)


def register_fsspec_opener() -> None:
    """Let webdataset open fsspec URLs (s3://, gs://, ...) through :mod:`pipeline.storage`.

    ``gopen.gopen_schemes`` is webdataset's table of openers by URL scheme, its extension point.
    """
    import importlib

    # The package re-exports the function gopen under the module's name.
    schemes = importlib.import_module("webdataset.gopen").gopen_schemes
    for scheme in FSSPEC_SCHEMES:
        schemes[scheme] = _gopen_fsspec


def _cache_path(url: str, cache_dir: str) -> str:
    # One folder per split URL (hashed: URLs carry characters paths should not), readable names.
    parent, _, name = url.rpartition("/")
    tag = hashlib.sha1(parent.encode()).hexdigest()[:16]
    return os.path.join(cache_dir, tag, name)


def local_or_cached(url: str, cache_dir: str | None) -> str:
    """What to hand webdataset for ``url``: a local path as is; a remote URL as is (opened by
    :func:`register_fsspec_opener`'s handler), or with ``cache_dir`` the path of a local copy.

    The copy is made under a temporary name and renamed when complete (workers may fetch the same
    shard at once; the last rename wins with identical bytes); a copy whose size differs from
    the remote object is fetched again.
    """
    if not storage.is_remote(url):
        return storage.strip_protocol(url)
    if cache_dir is None:
        return url
    fs, path = storage.get_fs(url)
    local = _cache_path(url, cache_dir)
    if not (os.path.exists(local) and os.path.getsize(local) == fs.size(path)):
        with storage.atomic_local_target(local) as tmp:
            fs.get_file(path, tmp)
    return local


# ------------------------------------------------------------------------------ shard lists


def stream_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, epoch, rank, worker, ...), the same in every process."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


def shard_source(
    urls: Sequence[str],
    *,
    resample: bool,
    seed_of_worker: Callable[[], int] | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> list[Any]:
    """The first stages of a pipeline: which shards this worker of this rank reads.

    ``resample``: webdataset's ``ResampledShards``, shards drawn with replacement forever, seeded
    by ``seed_of_worker()`` (called in the worker), so every rank runs as many steps as it is
    asked for whatever the shard count. Otherwise every shard exactly once overall: the list is
    split by rank (``rank::world_size``, explicit because evaluation also runs without
    torch.distributed) and then by DataLoader worker (``wds.split_by_worker``).
    """
    import webdataset as wds

    if not urls:
        raise InvalidInput("split has no shards")
    if resample:
        return [wds.ResampledShards(list(urls), worker_seed=seed_of_worker, deterministic=True)]
    return [wds.SimpleShardList(list(urls)), wds.slice(rank, None, world_size), wds.split_by_worker]


# --------------------------------------------------------------------------- aligned reading


_END = object()


def _check_members(
    sample: Mapping[str, Any], kinds: Sequence[str], num_frames: Mapping[str, int] | None
) -> None:
    names = {k for k in sample if not k.startswith("_")}
    if "pose" in kinds and not POSE_MEMBERS <= names:
        raise IntegrityError(f"pose members missing: {sorted(POSE_MEMBERS - names)}")
    if "raster" in kinds and not RASTER_MEMBERS <= names:
        raise IntegrityError("raster member missing: raster.npz")
    if "rgb" in kinds and num_frames is not None:
        want = num_frames.get(sample["__key__"])
        have = len(rgb_frame_members(names))
        if want is not None and have != want:
            raise IntegrityError(f"{have} JPEG frames, the index says {want}")


def _shard_url(split_url: str, kind: str, number: int) -> str:
    return storage.join(split_url, shard_name(kind, number))


def _absent_shards(split_url: str, number: int, kinds: Sequence[str], exc: BaseException) -> str:
    """Which of the shard set's files do not exist ("" when ``exc`` is not about a missing file).

    The opener's own FileNotFoundError names the file differently per backend (a path, an
    (key, url) tuple, "The specified key does not exist."), so the names are looked up again.
    """
    if not any(isinstance(e, FileNotFoundError) for e in (exc, root_cause(exc))):
        return ""
    try:
        names = [
            shard_name(k, number)
            for k in kinds
            if not storage.exists(_shard_url(split_url, k, number))
        ]
    except Exception:  # storage gone since: the opener's answer is all there is
        return ""
    return " and ".join(names)


def _read_shard_set(
    split_url: str,
    number: int,
    kinds: Sequence[str],
    *,
    expected: int | None,
    num_frames: Mapping[str, int] | None,
    log: ErrorLog,
    cache_dir: str | None,
) -> Iterator[dict[str, Any]]:
    import webdataset as wds

    where = f"{split_url.rstrip('/')}/{'+'.join(shard_name(k, number) for k in kinds)}"
    failures: list[BaseException] = []

    def stop_on_error(exn: BaseException) -> bool:
        # tarfile_to_samples' handler: remember the damage and stop reading this tar.
        failures.append(exn)
        return False

    try:
        urls = [local_or_cached(_shard_url(split_url, k, number), cache_dir) for k in kinds]
    except Exception as exc:  # fetching into --cache-dir: the same damage as reading it directly
        failures.append(exc)
        urls = []
    streams = [wds.tarfile_to_samples(handler=stop_on_error)([{"url": u}]) for u in urls]
    # One sample of look-ahead: a sample is handed on only once the next one has started in
    # every kind or the shard ended cleanly, so the last group of a cut-off tar never passes
    # for a whole sample.
    pending: dict[str, Any] | None = None
    count = yielded = skipped = 0
    try:
        while True:
            groups = [next(s, _END) for s in streams]
            if failures:
                break
            if all(g is _END for g in groups):
                break
            keys = ["<end>" if g is _END else g["__key__"] for g in groups]
            if len(set(keys)) != 1:
                raise ShardMismatchError(
                    f"shard {number:06d} of {split_url}: keys differ across {'/'.join(kinds)}: "
                    f"{keys}"
                )
            merged: dict[str, Any] = {"__key__": keys[0], "__shard__": number}
            for g in groups:
                merged.update((k, v) for k, v in g.items() if not k.startswith("__"))
            count += 1
            if pending is not None:
                log.read += 1
                yield pending
                yielded += 1
            try:
                _check_members(merged, kinds, num_frames)
            except IntegrityError as exc:
                log.add(f"corrupt sample {merged['__key__']} in {where}", exc)
                skipped += 1
                pending = None
                continue
            pending = merged
    finally:
        for s in streams:
            with contextlib.suppress(Exception):
                s.close()
    # What the index promised and was neither handed on nor already counted as a corrupt
    # sample (at least this one error's sample).
    lost = max(1, (expected if expected is not None else count) - yielded - skipped)
    if failures:
        absent = _absent_shards(split_url, number, kinds, failures[0])
        if absent:  # not damage: a shard the index lists is not there (deleted, a partial copy)
            log.add(f"missing shard {where}", FileNotFoundError(f"{absent} not found"), lost)
        else:
            log.add(f"corrupt shard {where}", failures[0], lost)
        return
    if expected is not None and count != expected:
        log.add(
            f"corrupt shard {where}",
            IntegrityError(f"holds {count} samples, the index says {expected}"),
            lost,
        )
        return
    if pending is not None:
        log.read += 1
        yield pending


def aligned_samples(
    src: Iterable[Mapping[str, Any]],
    *,
    split_url: str,
    kinds: Sequence[str],
    log: ErrorLog,
    counts: Mapping[int, int] | None = None,
    num_frames: Mapping[str, int] | None = None,
    cache_dir: str | None = None,
    max_consecutive_failures: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Stage: shard URLs (``{"url": ...}`` of any kind) -> samples with the members of ``kinds``.

    Each sample is a dict ``{"__key__", "__shard__", member extension: bytes, ...}``. A damaged
    shard (unreadable, truncated, count or members not as ``counts`` / ``num_frames`` from the
    index say) is logged in ``log`` and the rest of it skipped; samples read before the damage
    are kept. ``max_consecutive_failures`` stops an endless resampled stream whose shards are all
    unreadable.
    """
    register_fsspec_opener()
    failures = 0
    for shard in src:
        parsed = parse_shard_name(shard["url"])
        if parsed is None:
            raise ValueError(f"not a shard URL: {shard['url']}")
        number = parsed[1]
        before = len(log.pending)
        n = 0
        for sample in _read_shard_set(
            split_url,
            number,
            kinds,
            expected=None if counts is None else counts.get(number, 0),
            num_frames=num_frames,
            log=log,
            cache_dir=cache_dir,
        ):
            n += 1
            yield sample
        if n == 0 and len(log.pending) > before:
            failures += 1
            if max_consecutive_failures is not None and failures > max_consecutive_failures:
                raise InvalidInput(
                    f"{split_url}: {failures} shard reads in a row failed; giving up"
                )
        else:
            failures = 0


# ------------------------------------------------------------------------ strict single tar


class TarDamaged(InvalidInput):
    """A tar that does not read to its end-of-archive marker (truncated or damaged)."""


_BLOCK = 512


def _tar_files(url: str) -> Iterator[dict[str, Any]]:
    """Members of one tar as webdataset file records, then a check of the end-of-archive marker.

    tarfile's stream mode (what webdataset reads with) stops without a word at a garbled header
    or at a cut after a whole member, so a damaged shard reads as a shorter valid one. Here
    the reader's offset after the last member must be followed by two zero blocks; anything
    else raises :class:`TarDamaged` with what was found.
    """
    import tarfile

    count = 0
    fs, path = storage.get_fs(url)
    with fs.open(path, "rb") as f:
        try:
            with tarfile.open(fileobj=f, mode="r|") as tar:
                for info in tar:
                    if not info.isreg():
                        continue
                    data = tar.extractfile(info).read()
                    if len(data) != info.size:
                        raise tarfile.ReadError("unexpected end of data")
                    count += 1
                    yield {"fname": info.name, "data": data, "__url__": url}
                end = tar.offset
        except tarfile.ReadError as exc:
            if "unexpected end" in str(exc):
                raise TarDamaged(f"truncated inside member {count + 1}") from None
            if count == 0 and "empty" in str(exc):
                raise TarDamaged("empty file: no tar header") from None
            raise TarDamaged(f"corrupt member header after {count} members ({exc})") from None
    size = fs.size(path)
    tail = fs.cat_file(path, start=end, end=min(size, end + 2 * _BLOCK)) if size > end else b""
    if tail.count(0) != len(tail):
        raise TarDamaged(f"corrupt member header after {count} members")
    if len(tail) < 2 * _BLOCK:
        raise TarDamaged(f"truncated: no end-of-archive marker after {count} members")


def scan_tar(url: str) -> Iterator[dict[str, Any]]:
    """The samples of ONE tar (members grouped by key with webdataset's ``group_by_keys``), for
    tools that check shards one by one; raises :class:`TarDamaged` on any damage, so a damaged
    shard never reads as a shorter valid one. Samples stream: memory holds one at a time.
    """
    from webdataset.tariterators import group_by_keys

    yield from group_by_keys(_tar_files(url))


def _npy(data: bytes) -> np.ndarray:
    import io

    return np.load(io.BytesIO(data), allow_pickle=False)


def _npz(data: bytes) -> dict[str, np.ndarray]:
    import io

    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def _json(data: bytes) -> Any:
    import json

    return json.loads(data)


def decode_stage(handler: Callable[[BaseException], bool] | None = None) -> Any:
    """webdataset's ``decode`` with the project's member types only: .npy, .npz and .json.

    JPEG frames stay bytes (a clip decodes only the frames it reads), and webdataset's default
    decoders, which unpickle ``.pyd``/``.pickle`` members, are left out.
    """
    import webdataset as wds

    return wds.decode(
        wds.handle_extension("npy", _npy),
        wds.handle_extension("npz", _npz),
        wds.handle_extension("json", _json),
        pre=[],
        post=[],
        handler=handler or wds.reraise_exception,
    )


def shuffle_stage(size: int, rng: random.Random) -> Any:
    """webdataset's bounded ``shuffle`` buffer, filled completely before it yields."""
    import webdataset as wds

    return wds.shuffle(size, initial=size, rng=rng)
