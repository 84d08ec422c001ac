"""A built dataset and its splits, local or on object storage: the one way to read one.

    from pipeline.shards import Dataset

    split = Dataset.open("s3://bucket/shards/k400").split("train")
    for sample in split.pipeline(kinds=("pose",)):   # never downloads an RGB byte
        keypoints = sample["keypoints.npy"]          # float32 [F, P, K, 3]
        frames = sample["frames.npy"]                # int32 [F] source frame indices
        meta = sample["json"]                        # label, fps, sizes, layout, ...

``pipeline build`` writes datasets through the same package; ``pipeline inspect|verify|show|
export`` and the trainer read them through :class:`Dataset` and :class:`Split`.
"""

from __future__ import annotations

import json
import posixpath
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from .. import storage
from ..errors import InputNotFound, InvalidInput
from .info import DATASET_JSON, DatasetInfo
from .members import KINDS, parse_shard_name, shard_name
from .reader import (
    ErrorLog,
    aligned_samples,
    decode_stage,
    shard_source,
    shuffle_stage,
    stream_seed,
)
from .schema import (
    ERRORS_PARQUET,
    ERRORS_SCHEMA,
    FILTERED_PARQUET,
    FILTERED_SCHEMA,
    INDEX_PARQUET,
    INDEX_SCHEMA,
    read_rows,
    read_table,
)

__all__ = [
    "Dataset",
    "Split",
    "SplitIndex",
    "Entry",
    "resolve_dataset_root",
    "read_dataset_json",
    "list_entries",
    "shard_entries",
    "is_temporary",
]


def resolve_dataset_root(url: str) -> tuple[str, str | None]:
    """(dataset root, split or None) for a dataset root or a path to one of its split folders."""
    url = str(url).rstrip("/") or "/"
    if storage.exists(storage.join(url, DATASET_JSON)):
        return url, None
    parent, _, split = url.rpartition("/")
    if parent and storage.exists(storage.join(parent, DATASET_JSON)):
        return parent, split
    raise InputNotFound(f"no {DATASET_JSON} at {url} or its parent: not a built dataset")


def read_dataset_json(root: str) -> dict[str, Any]:
    """dataset.json of the dataset at ``root`` as a dict (ValueError naming the file if broken)."""
    where = storage.join(root, DATASET_JSON)
    try:
        raw = json.loads(storage.read_bytes(where))
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where} does not hold a JSON object")
    return raw


@dataclass(frozen=True)
class Entry:
    """One entry of a folder listing."""

    name: str
    size: int
    is_dir: bool


def list_entries(url: str) -> dict[str, Entry]:
    """Entries directly under ``url`` (name -> Entry), hidden ones included; {} if absent."""
    fs, path = storage.get_fs(url)
    if storage.is_remote(url):
        # s3fs caches listings; a build or another tool may have changed the bucket since.
        fs.invalidate_cache(path)
    if not fs.exists(path):
        return {}
    out = {}
    for item in fs.ls(path, detail=True):
        name = posixpath.basename(str(item["name"]).rstrip("/"))
        out[name] = Entry(name, int(item.get("size") or 0), item.get("type") == "directory")
    return out


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary file of an unfinished write (shards, dataset.json, ...)."""
    return name.startswith(storage.TMP_PREFIX)


def shard_entries(entries: dict[str, Entry]) -> dict[str, dict[int, Entry]]:
    """kind -> shard number -> entry, for the shard tars among ``entries``."""
    out: dict[str, dict[int, Entry]] = {kind: {} for kind in KINDS}
    for name, entry in entries.items():
        parsed = parse_shard_name(name)
        if parsed is not None and not entry.is_dir:
            out[parsed[0]][parsed[1]] = entry
    return out


@dataclass
class SplitIndex:
    """The index columns a reader of samples needs, one entry per video."""

    keys: list[str]
    shards: np.ndarray  # int64 shard number
    labels: np.ndarray  # int64 class index in dataset.json's class list
    num_frames: np.ndarray  # kept frames
    person_fraction: np.ndarray  # fraction of kept frames with a person

    COLUMNS = ("key", "shard", "label", "num_frames", "person_fraction")

    @classmethod
    def from_table(cls, table: pa.Table) -> SplitIndex:
        cols = table.select(list(cls.COLUMNS)).to_pydict()
        return cls(
            keys=[str(k) for k in cols["key"]],
            shards=np.asarray(cols["shard"], dtype=np.int64),
            labels=np.asarray(cols["label"], dtype=np.int64),
            num_frames=np.asarray(cols["num_frames"], dtype=np.int64),
            person_fraction=np.asarray(cols["person_fraction"], dtype=np.float64),
        )

    def __len__(self) -> int:
        return len(self.keys)

    def shard_numbers(self) -> list[int]:
        return sorted({int(s) for s in self.shards})

    def shard_counts(self) -> dict[int, int]:
        numbers, counts = np.unique(self.shards, return_counts=True)
        return {int(n): int(c) for n, c in zip(numbers, counts, strict=True)}

    def label_of(self) -> dict[str, int]:
        return dict(zip(self.keys, (int(x) for x in self.labels), strict=True))

    def frames_of(self) -> dict[str, int]:
        return dict(zip(self.keys, (int(x) for x in self.num_frames), strict=True))


@dataclass
class Dataset:
    """A built dataset: its root, dataset.json (raw and parsed) and split names."""

    root: str
    raw: dict[str, Any]
    info: DatasetInfo
    splits: list[str]
    url_split: str | None = None  # the split folder the user pointed at, if any
    _split_cache: dict[str, Split] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, url: str) -> Dataset:
        """The dataset at ``url``: its root (where dataset.json is) or one of its split folders."""
        root, url_split = resolve_dataset_root(url)
        raw = read_dataset_json(root)
        where = storage.join(root, DATASET_JSON)
        try:
            info = DatasetInfo.from_json(raw)
        except (KeyError, TypeError) as exc:
            raise InvalidInput(f"{where} is missing field {exc}") from None
        return cls(root, raw, info, _discover_splits(root, raw), url_split)

    def split_url(self, name: str) -> str:
        return storage.join(self.root, name)

    def split(self, name: str | None = None) -> Split:
        """A split by name; without a name, the split folder the URL named."""
        name = name or self.url_split
        if not name:
            raise InvalidInput(f"{self.root}: give a split (splits: {', '.join(self.splits)})")
        if name not in self._split_cache:
            self._split_cache[name] = Split(self, name)
        return self._split_cache[name]

    def select(self, names: str | None) -> list[str]:
        """Splits a command works on: ``names`` (comma separated), else the URL's, else all."""
        wanted = names or self.url_split
        if wanted is None:
            if not self.splits:
                raise InvalidInput(f"{self.root} holds no splits (no */index.parquet)")
            return list(self.splits)
        chosen = [s.strip() for s in wanted.split(",") if s.strip()]
        unknown = [s for s in chosen if s not in self.splits]
        if unknown:
            have = ", ".join(self.splits) or "none"
            raise InvalidInput(f"no split {unknown[0]!r} in {self.root} (splits: {have})")
        return chosen


def _discover_splits(root: str, raw: dict[str, Any]) -> list[str]:
    """Split folders under ``root`` (those holding an index or shards), plus dataset.json's."""
    found = []
    for name, entry in sorted(list_entries(root).items()):
        if not entry.is_dir or name.startswith(("_", ".")):
            continue
        inner = list_entries(storage.join(root, name))
        if INDEX_PARQUET in inner or any(parse_shard_name(n) for n in inner):
            found.append(name)
    listed = raw.get("splits")
    extra = [s for s in listed if s not in found] if isinstance(listed, dict) else []
    return found + sorted(extra)


class Split:
    """One split of a dataset: its index, errors, filtered rows, shard listing and samples."""

    def __init__(self, dataset: Dataset, name: str) -> None:
        self.dataset = dataset
        self.name = name
        self.url = dataset.split_url(name)
        self._index: SplitIndex | None = None
        self._entries: dict[str, Entry] | None = None

    @property
    def info(self) -> DatasetInfo:
        return self.dataset.info

    @property
    def root(self) -> str:
        return self.dataset.root

    def _table_url(self, name: str) -> str:
        return storage.join(self.url, name)

    def index_table(self, columns: Sequence[str] | None = None) -> pa.Table:
        url = self._table_url(INDEX_PARQUET)
        if not storage.exists(url) and not storage.exists(self.url):
            have = ", ".join(self.dataset.splits) or "none"
            raise InputNotFound(f"no split {self.name!r} in {self.root} (splits: {have})")
        if not storage.exists(url):
            raise InputNotFound(
                f"{url} is missing: the build of split {self.name!r} did not finish "
                "(run the same pipeline build again to resume)"
            )
        return read_table(url, INDEX_SCHEMA, columns)

    def index_rows(self) -> list[dict[str, Any]]:
        return self.index_table().to_pylist()

    @property
    def index(self) -> SplitIndex:
        if self._index is None:
            self._index = SplitIndex.from_table(self.index_table(SplitIndex.COLUMNS))
        return self._index

    def error_rows(self) -> list[dict[str, Any]]:
        """Videos that could not be used (``errors.parquet``); [] when there is none."""
        return read_rows(
            self._table_url(ERRORS_PARQUET), ERRORS_SCHEMA, ("source", "stage", "reason"), True
        )

    def filtered_rows(self) -> list[dict[str, Any]]:
        """Annotation rows left out on purpose (``filtered.parquet``); [] when there is none."""
        return read_rows(self._table_url(FILTERED_PARQUET), FILTERED_SCHEMA, None, True)

    def entries(self) -> dict[str, Entry]:
        """The split folder's listing (cached: call :meth:`refresh` after writing to it)."""
        if self._entries is None:
            self._entries = list_entries(self.url)
        return self._entries

    def refresh(self) -> None:
        self._entries = None
        self._index = None

    def shard_url(self, kind: str, number: int) -> str:
        return storage.join(self.url, shard_name(kind, number))

    def read_shard(
        self,
        number: int,
        kinds: Sequence[str] = KINDS,
        log: ErrorLog | None = None,
        decode: bool = True,
    ) -> Iterator[dict[str, Any]]:
        """The samples of shard ``number`` (its ``kinds`` in lockstep), in order, decoded unless
        ``decode=False`` (members as bytes). A damaged shard raises after its good samples."""
        log = log if log is not None else ErrorLog()
        index = self.index
        samples = aligned_samples(
            [{"url": self.shard_url(kinds[0], number)}],
            split_url=self.url,
            kinds=tuple(kinds),
            log=log,
            counts=index.shard_counts(),
            num_frames=index.frames_of() if "rgb" in kinds else None,
        )
        yield from decode_stage()(samples) if decode else samples
        if log.pending:
            raise InvalidInput(f"{log.pending[0]}; run pipeline verify")

    def sample(self, key: str, kinds: Sequence[str] = KINDS) -> dict[str, Any]:
        """One decoded sample by key (reads its shards up to it)."""
        try:
            number = int(self.index.shards[self.index.keys.index(key)])
        except ValueError:
            raise InvalidInput(f"no sample {key!r} in split {self.name}") from None
        missing = [k for k in kinds if not storage.exists(self.shard_url(k, number))]
        if missing:  # a copy that kept some kinds only is not damage: say what is not there
            raise InputNotFound(
                f"{self.url}: no {' or '.join(missing)} shard {shard_name(missing[0], number)}"
                f" (this copy lacks the {', '.join(missing)} shards?)"
            )
        for sample in self.read_shard(number, kinds):
            if sample["__key__"] == key:
                return sample
        raise InvalidInput(
            f"{self.url}: shard {number} holds no sample {key!r}; run pipeline verify"
        )

    def pipeline(
        self,
        kinds: Sequence[str] = KINDS,
        *,
        decode: bool = True,
        resample: bool = False,
        shuffle: int = 0,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        cache_dir: str | None = None,
        log: ErrorLog | None = None,
        stages: Sequence[Callable[..., Any]] = (),
        batches_per_epoch: int | None = None,
    ) -> Any:
        """A ``webdataset.DataPipeline`` over the samples of this split.

        Each sample is a dict with ``__key__``, ``__shard__`` and the members of ``kinds``
        (``keypoints.npy``, ``frames.npy``, ``json`` for pose; ``raster.npz`` for raster, a dict
        of ``heatmaps``/``pafs``; ``NNNNNN.jpg`` JPEG bytes for rgb), decoded unless
        ``decode=False``. Without ``resample`` every sample is read once, the shards split over
        ``world_size`` ranks and the DataLoader workers; with it, shards are drawn with
        replacement forever (training), seeded by (seed, epoch, rank, worker). ``shuffle`` is a
        shuffle buffer size. ``stages`` are appended (e.g. clip sampling and batching), and
        ``batches_per_epoch`` ends each worker's resampled stream (``with_epoch``). Damaged
        shards and samples are skipped and recorded in ``log`` (warned about once each).
        """
        import webdataset as wds  # imports torch: only where samples are read

        unknown = [k for k in kinds if k not in KINDS]
        if unknown or not kinds:
            raise ValueError(f"kinds must be among {', '.join(KINDS)}; got {list(kinds)}")
        log = log if log is not None else ErrorLog()
        index = self.index
        urls = [self.shard_url(kinds[0], n) for n in index.shard_numbers()]

        def worker_seed() -> int:
            # Called in the DataLoader worker: one stream per (seed, epoch, rank, worker).
            _, _, worker, _ = wds.utils.pytorch_worker_info()
            return stream_seed(seed, epoch, rank, worker)

        steps: list[Any] = shard_source(
            urls, resample=resample, seed_of_worker=worker_seed, rank=rank, world_size=world_size
        )
        steps.append(
            wds.pipelinefilter(aligned_samples)(
                split_url=self.url,
                kinds=tuple(kinds),
                log=log,
                counts=index.shard_counts(),
                num_frames=index.frames_of() if "rgb" in kinds else None,
                cache_dir=cache_dir,
                max_consecutive_failures=2 * len(urls) + 8 if resample else None,
            )
        )
        if shuffle > 1:
            steps.append(_SeededShuffle(shuffle, seed, epoch, rank))
        if decode:
            steps.append(decode_stage())
        steps.extend(stages)
        pipe = wds.DataPipeline(*steps)
        if batches_per_epoch is not None:
            if not resample:
                raise ValueError("batches_per_epoch needs resample=True (an endless stream)")
            pipe = pipe.with_epoch(batches_per_epoch)
        return pipe


class _SeededShuffle:
    """The shuffle stage, seeded per (seed, epoch, rank, worker) when the stream starts."""

    def __init__(self, size: int, seed: int, epoch: int, rank: int) -> None:
        self.size, self.seed, self.epoch, self.rank = size, seed, epoch, rank

    def __call__(self, src: Any) -> Any:
        import webdataset as wds

        _, _, worker, _ = wds.utils.pytorch_worker_info()
        rng = random.Random(stream_seed(self.seed, self.epoch, self.rank, worker, 1))
        return shuffle_stage(self.size, rng)(src)
