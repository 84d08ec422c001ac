"""`dataset.json`: what a built dataset holds and how it was made (shard format v1).

The trainer reads this to learn the class list, the keypoint layout, the raster parameters and
the frame stride, and checkpoints copy the relevant parts so that a model refuses data of
another layout. See docs/design.md, "Shard format v1".
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from . import __version__, storage
from .skeletons import get_layout

FORMAT_VERSION = 1
DATASET_JSON = "dataset.json"
INDEX_PARQUET = "index.parquet"
ERRORS_PARQUET = "errors.parquet"
SIZE_MULTIPLE = 4  # stored sides are multiples of 4 so that the raster is exactly a quarter

__all__ = [
    "FORMAT_VERSION",
    "RasterParams",
    "DatasetInfo",
    "stored_size",
    "load_dataset_info",
    "resolve_dataset_root",
    "INDEX_FIELDS",
    "ERRORS_FIELDS",
    "write_parquet",
]


@dataclass(frozen=True)
class RasterParams:
    """Raster parameters (paper section 3.2; sigma and PAF width at raster resolution)."""

    sigma: float = 0.5
    paf_width: float = 1.0
    scale: float = 0.25  # raster side / stored frame side
    max_persons: int = 5
    score_threshold: float = 0.1
    heatmap_dtype: str = "uint8"
    heatmap_scale: int = 255
    paf_dtype: str = "int8"
    paf_scale: int = 127


def stored_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """Stored frame size (height, width): short side ``short_side``, both sides multiples of 4.

    The long side is rounded to the nearest multiple of 4, which changes the aspect ratio by
    under 1 % for any short side >= 200.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"invalid frame size {width}x{height}")
    short = max(SIZE_MULTIPLE, int(round(short_side / SIZE_MULTIPLE)) * SIZE_MULTIPLE)
    if height <= width:
        long = width * short / height
        return short, max(
            SIZE_MULTIPLE, int(math.floor(long / SIZE_MULTIPLE + 0.5)) * SIZE_MULTIPLE
        )
    long = height * short / width
    return max(SIZE_MULTIPLE, int(math.floor(long / SIZE_MULTIPLE + 0.5)) * SIZE_MULTIPLE), short


@dataclass
class DatasetInfo:
    dataset: str
    classes: list[str]
    layout: str
    person_order: str  # "track" (the person axis follows a track) or "score"
    frame_stride: int
    short_side: int
    raster: RasterParams = field(default_factory=RasterParams)
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    build: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    format_version: int = FORMAT_VERSION
    pipeline_version: str = __version__

    def to_json(self) -> dict[str, Any]:
        layout = get_layout(self.layout)
        return {
            "format_version": self.format_version,
            "pipeline_version": self.pipeline_version,
            "dataset": self.dataset,
            "classes": list(self.classes),
            **layout.to_json(),
            "person_order": self.person_order,
            "raster": asdict(self.raster),
            "raster_channels": layout.num_channels,
            "frame_stride": self.frame_stride,
            "short_side": self.short_side,
            "frame_size_rule": (
                f"short side {self.short_side}, both sides rounded to a multiple of "
                f"{SIZE_MULTIPLE}; raster = stored size * {self.raster.scale}"
            ),
            "color_order": "RGB",
            "seed": self.seed,
            "splits": self.splits,
            "build": self.build,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DatasetInfo:
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"dataset.json has format version {version}; this tool reads {FORMAT_VERSION}"
            )
        return cls(
            dataset=data["dataset"],
            classes=list(data["classes"]),
            layout=data["layout"],
            person_order=data.get("person_order", "score"),
            frame_stride=int(data["frame_stride"]),
            short_side=int(data["short_side"]),
            raster=RasterParams(**data.get("raster", {})),
            splits=dict(data.get("splits", {})),
            build=dict(data.get("build", {})),
            seed=int(data.get("seed", 0)),
            format_version=version,
            pipeline_version=data.get("pipeline_version", "unknown"),
        )

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n"

    def save(self, root: str) -> None:
        storage.write_bytes_atomic(storage.join(root, DATASET_JSON), self.dumps().encode())


def resolve_dataset_root(url: str) -> tuple[str, str | None]:
    """(dataset root, split or None) for a dataset root or a path to one of its split folders."""
    url = str(url).rstrip("/") or "/"
    if storage.exists(storage.join(url, DATASET_JSON)):
        return url, None
    parent, _, split = url.rpartition("/")
    if parent and storage.exists(storage.join(parent, DATASET_JSON)):
        return parent, split
    raise FileNotFoundError(f"no {DATASET_JSON} at {url} or its parent: not a built dataset")


def load_dataset_info(url: str) -> DatasetInfo:
    root, _ = resolve_dataset_root(url)
    try:
        data = json.loads(storage.read_bytes(storage.join(root, DATASET_JSON)))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{storage.join(root, DATASET_JSON)} is not valid JSON: {exc}") from None
    return DatasetInfo.from_json(data)


# index.parquet and errors.parquet columns (shard format v1; see docs/design.md).
INDEX_FIELDS = (
    ("key", "string"),
    ("shard", "int32"),
    ("label", "int32"),
    ("label_name", "string"),
    ("source", "string"),
    ("num_frames", "int32"),
    ("source_frames", "int32"),
    ("fps", "float32"),
    ("height", "int32"),
    ("width", "int32"),
    ("person_fraction", "float32"),
    ("num_persons", "int32"),
    ("bytes", "int64"),
)
ERRORS_FIELDS = (
    ("source", "string"),
    ("stage", "string"),
    ("reason", "string"),
    ("key", "string"),
    ("split", "string"),
)


def write_parquet(
    url: str, rows: list[dict[str, Any]], fields: tuple[tuple[str, str], ...]
) -> None:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(name, pa.type_for_alias(kind)) for name, kind in fields])
    table = pa.Table.from_pylist([{n: r.get(n) for n, _ in fields} for r in rows], schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    storage.write_bytes_atomic(url, buf.getvalue())
