"""Read-only access to a built dataset for the tools: root, dataset.json, splits, index, listings.

Everything goes through :mod:`pipeline.storage`, so the tools work the same on a local folder and
on s3://. Nothing here reads shard bytes; the commands decide which shards they stream.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from typing import Any

from .. import storage
from ..dataset_info import (
    DATASET_JSON,
    ERRORS_PARQUET,
    INDEX_PARQUET,
    DatasetInfo,
    resolve_dataset_root,
)
from ..shards import KINDS, TMP_PREFIX, parse_shard_name

__all__ = [
    "INDEX_COLUMNS",
    "ERRORS_COLUMNS",
    "Entry",
    "Dataset",
    "open_dataset",
    "list_entries",
    "read_parquet_rows",
    "shard_numbers",
    "is_temporary",
]

# Columns of index.parquet and errors.parquet (shard format v1).
INDEX_COLUMNS = (
    "key",
    "shard",
    "label",
    "label_name",
    "source",
    "num_frames",
    "source_frames",
    "fps",
    "height",
    "width",
    "person_fraction",
    "num_persons",
    "bytes",
)
ERRORS_COLUMNS = ("source", "stage", "reason")


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
        is_dir = item.get("type") == "directory"
        out[name] = Entry(name, int(item.get("size") or 0), is_dir)
    return out


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary file of an unfinished write (shards, dataset.json, ...)."""
    return name.startswith(TMP_PREFIX)


def shard_numbers(entries: dict[str, Entry]) -> dict[str, dict[int, Entry]]:
    """kind -> shard number -> entry, for the shard tars among ``entries``."""
    out: dict[str, dict[int, Entry]] = {kind: {} for kind in KINDS}
    for name, entry in entries.items():
        parsed = parse_shard_name(name)
        if parsed is not None and parsed[1] >= 0 and not entry.is_dir:
            out[parsed[0]][parsed[1]] = entry
    return out


def read_parquet_rows(url: str, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows of a Parquet file as dicts; ValueError naming the file if it lacks ``columns``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(storage.read_bytes(url)))
    except FileNotFoundError:
        raise
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise ValueError(f"{url} is not a readable Parquet file ({exc})") from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(f"{url} lacks column(s) {', '.join(missing)}")
    return table.to_pylist()


@dataclass
class Dataset:
    """A built dataset: its root, dataset.json (raw and parsed) and split names."""

    root: str
    raw: dict[str, Any]
    info: DatasetInfo
    splits: list[str]
    url_split: str | None = None  # the split folder the user pointed at, if any
    _entries: dict[str, dict[str, Entry]] = field(default_factory=dict, repr=False)

    def split_url(self, split: str) -> str:
        return storage.join(self.root, split)

    def select(self, split: str | None) -> list[str]:
        """Splits a command works on: ``--split``, else the folder in URL, else all of them."""
        wanted = split or self.url_split
        if wanted is None:
            if not self.splits:
                raise ValueError(f"{self.root} holds no splits (no */index.parquet)")
            return list(self.splits)
        names = [s.strip() for s in wanted.split(",") if s.strip()]
        unknown = [s for s in names if s not in self.splits]
        if unknown:
            have = ", ".join(self.splits) or "none"
            raise ValueError(f"no split {unknown[0]!r} in {self.root} (splits: {have})")
        return names

    def entries(self, split: str) -> dict[str, Entry]:
        if split not in self._entries:
            self._entries[split] = list_entries(self.split_url(split))
        return self._entries[split]

    def index_rows(self, split: str) -> list[dict[str, Any]]:
        url = storage.join(self.split_url(split), INDEX_PARQUET)
        if not storage.exists(url):
            raise FileNotFoundError(
                f"{url} is missing: the build of split {split!r} did not finish "
                "(run the same pipeline build again to resume)"
            )
        return read_parquet_rows(url, INDEX_COLUMNS)

    def error_rows(self, split: str) -> list[dict[str, Any]]:
        url = storage.join(self.split_url(split), ERRORS_PARQUET)
        if not storage.exists(url):
            return []
        return read_parquet_rows(url, ERRORS_COLUMNS)


def read_dataset_json(root: str) -> dict[str, Any]:
    url = storage.join(root, DATASET_JSON)
    try:
        data = json.loads(storage.read_bytes(url))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{url} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{url} does not hold a JSON object")
    return data


def discover_splits(root: str, raw: dict[str, Any]) -> list[str]:
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


def open_dataset(url: str) -> Dataset:
    """Open a dataset from its root or one of its split folders (local path or URL)."""
    root, url_split = resolve_dataset_root(url)
    raw = read_dataset_json(root)
    try:
        info = DatasetInfo.from_json(raw)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{storage.join(root, DATASET_JSON)} is missing field {exc}") from None
    return Dataset(root, raw, info, discover_splits(root, raw), url_split)
