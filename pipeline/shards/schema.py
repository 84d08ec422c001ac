"""The Parquet tables of a built split, declared once (shard format v1; docs/design.md).

  {split}/index.parquet     one row per sample written
  {split}/errors.parquet    one row per video that could not be used (root cause, plain text)
  {split}/filtered.parquet  one row per annotation row left out on purpose (e.g. its class is
                            not in --classes): not an error, but never silently dropped

The build writes rows through :func:`write_table`, which refuses a row that lacks a column or
carries one the schema does not declare, so the writer cannot drift from the readers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .. import storage
from ..errors import InvalidInput

__all__ = [
    "INDEX_PARQUET",
    "ERRORS_PARQUET",
    "FILTERED_PARQUET",
    "INDEX_SCHEMA",
    "ERRORS_SCHEMA",
    "FILTERED_SCHEMA",
    "SchemaError",
    "write_table",
    "read_table",
    "read_rows",
]

INDEX_PARQUET = "index.parquet"
ERRORS_PARQUET = "errors.parquet"
FILTERED_PARQUET = "filtered.parquet"


def _schema(*fields: tuple[str, pa.DataType, str]) -> pa.Schema:
    return pa.schema(
        [pa.field(name, kind, metadata={"description": text}) for name, kind, text in fields]
    )


INDEX_SCHEMA = _schema(
    ("key", pa.string(), "sample key: the video file stem, dots replaced"),
    ("shard", pa.int32(), "shard number (rgb-/pose-/raster-NNNNNN.tar)"),
    ("label", pa.int32(), "class index in dataset.json's classes"),
    ("label_name", pa.string(), "class name"),
    ("source", pa.string(), "URL of the source video"),
    ("num_frames", pa.int32(), "kept frames"),
    ("source_frames", pa.int32(), "frames in the source video"),
    ("fps", pa.float32(), "source frame rate"),
    ("height", pa.int32(), "stored frame height (multiple of 4)"),
    ("width", pa.int32(), "stored frame width (multiple of 4)"),
    ("person_fraction", pa.float32(), "fraction of kept frames with a plausible person"),
    ("num_persons", pa.int32(), "P, the person axis of the stored keypoints"),
    ("bytes", pa.int64(), "payload bytes of the sample over all shard kinds"),
)
ERRORS_SCHEMA = _schema(
    ("source", pa.string(), "URL of the video (or annotation file)"),
    ("stage", pa.string(), "annotation, read, decode, pose, raster or write"),
    ("reason", pa.string(), "the root cause, one line of plain text"),
    ("key", pa.string(), "sample key, when known"),
    ("split", pa.string(), "split the video belongs to"),
)
FILTERED_SCHEMA = _schema(
    ("source", pa.string(), "URL of the video the row names"),
    ("key", pa.string(), "sample key"),
    ("split", pa.string(), "split of the row"),
    ("label_name", pa.string(), "class named by the row"),
    ("reason", pa.string(), "why the row was left out"),
)


class SchemaError(InvalidInput):
    """A table that does not have the columns of its schema."""


def _check_row(row: Mapping[str, Any], schema: pa.Schema) -> None:
    names = set(schema.names)
    if set(row) != names:
        missing, extra = sorted(names - set(row)), sorted(set(row) - names)
        raise SchemaError(f"row {dict(row)!r}: missing {missing}, not in the schema {extra}")


def write_table(url: str, rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> None:
    """Write ``rows`` (dicts with exactly the schema's columns) atomically as Parquet."""
    rows = list(rows)
    for row in rows:
        _check_row(row, schema)
    table = pa.Table.from_pylist(rows, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    storage.write_bytes_atomic(url, sink.getvalue().to_pybytes())


def read_table(url: str, schema: pa.Schema, columns: Sequence[str] | None = None) -> pa.Table:
    """The table at ``url``, with ``columns`` (default: all of the schema's).

    FileNotFoundError when absent; ValueError naming the file when it is not Parquet or lacks
    a column.
    """
    columns = list(columns or schema.names)
    data = storage.read_bytes(url)
    try:
        # No Arrow thread pool: these tables are small, and a pool started here could abort a
        # short-lived process at exit (std::terminate on a joinable thread,
        # apache/arrow#34314). pq.read_table starts one even with use_threads=False.
        table = pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise InvalidInput(f"{url} is not a readable Parquet file ({exc})") from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise SchemaError(f"{url} lacks column(s) {', '.join(missing)}")
    return table.select(columns)


def read_rows(
    url: str,
    schema: pa.Schema,
    columns: Sequence[str] | None = None,
    missing_ok: bool = False,
) -> list[dict[str, Any]]:
    """Rows of :func:`read_table` as dicts; [] for an absent file when ``missing_ok``."""
    if missing_ok and not storage.exists(url):
        return []
    return read_table(url, schema, columns).to_pylist()
