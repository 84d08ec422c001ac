"""Shard format v1: the one home of the dataset format (docs/design.md, "Shard format v1").

A built dataset is a folder (local or s3://) holding ``dataset.json`` and one folder per split
with ``index.parquet``, ``errors.parquet``, ``filtered.parquet`` and the aligned WebDataset tars
``rgb-NNNNNN.tar``, ``pose-NNNNNN.tar`` and ``raster-NNNNNN.tar``. This package owns all of it:

- :mod:`.info`     ``dataset.json`` (:class:`DatasetInfo`, :class:`RasterParams`, stored sizes)
- :mod:`.schema`   the Parquet schemas, declared once, and their writer/reader
- :mod:`.members`  the members of one sample in each shard kind, encoded and decoded
- :mod:`.writer`   :class:`ShardSetWriter`: aligned tars through ``webdataset.TarWriter``,
                   atomically
- :mod:`.reader`   the ``webdataset`` pipeline stages that read aligned shards, and what the
                   library cannot do (lockstep kinds, integrity against the index, fsspec)
- :mod:`.dataset`  :class:`Dataset` / :class:`Split`: opening a dataset and reading it

Reading the pose shards alone, as another project would::

    from pipeline.shards import Dataset

    for sample in Dataset.open("shards/k400").split("train").pipeline(kinds=("pose",)):
        sample["__key__"], sample["keypoints.npy"], sample["json"]["label"]

Nothing here imports Ray; webdataset (and with it torch) is imported only where shards are
written or samples read, so opening a dataset and its index stays quick.
"""

from .dataset import (
    Dataset,
    Entry,
    Split,
    SplitIndex,
    is_temporary,
    list_entries,
    read_dataset_json,
    resolve_dataset_root,
    shard_entries,
)
from .info import DATASET_JSON, FORMAT_VERSION, DatasetInfo, RasterParams, stored_size
from .members import (
    KINDS,
    POSE_MEMBERS,
    RASTER_MEMBERS,
    Sample,
    decode_members,
    decode_pose,
    decode_raster,
    decode_rgb,
    encode_pose,
    encode_raster,
    encode_rgb,
    encode_sample,
    kind_of_member,
    make_key,
    parse_shard_name,
    rgb_frame_members,
    shard_name,
    split_members,
)
from .reader import SHARD_ERRORS, ErrorLog, ShardMismatchError
from .schema import (
    ERRORS_PARQUET,
    ERRORS_SCHEMA,
    FILTERED_PARQUET,
    FILTERED_SCHEMA,
    INDEX_PARQUET,
    INDEX_SCHEMA,
    SchemaError,
    read_rows,
    read_table,
    write_table,
)
from .writer import ShardSetWriter, remove_temporaries

__all__ = [
    "Dataset",
    "Split",
    "SplitIndex",
    "Entry",
    "list_entries",
    "shard_entries",
    "is_temporary",
    "resolve_dataset_root",
    "read_dataset_json",
    "DATASET_JSON",
    "FORMAT_VERSION",
    "DatasetInfo",
    "RasterParams",
    "stored_size",
    "KINDS",
    "POSE_MEMBERS",
    "RASTER_MEMBERS",
    "Sample",
    "decode_members",
    "decode_pose",
    "decode_raster",
    "decode_rgb",
    "encode_pose",
    "encode_raster",
    "encode_rgb",
    "encode_sample",
    "kind_of_member",
    "make_key",
    "parse_shard_name",
    "rgb_frame_members",
    "shard_name",
    "split_members",
    "SHARD_ERRORS",
    "ErrorLog",
    "ShardMismatchError",
    "INDEX_PARQUET",
    "ERRORS_PARQUET",
    "FILTERED_PARQUET",
    "INDEX_SCHEMA",
    "ERRORS_SCHEMA",
    "FILTERED_SCHEMA",
    "SchemaError",
    "read_rows",
    "read_table",
    "write_table",
    "ShardSetWriter",
    "remove_temporaries",
]
