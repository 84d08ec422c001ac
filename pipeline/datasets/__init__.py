"""Dataset adapters: annotations + a video folder -> a manifest (one row per usable video).

Each adapter returns a :class:`Manifest`: the videos to build, the class list (its order is the
label order recorded in dataset.json), the rows that could not be used (errors.parquet, stage
``annotation`` or ``find``) and the counts for the build summary. Rows whose class is outside
``--classes`` are counted as filtered, never logged as errors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from ..errors import InvalidInput

__all__ = [
    "VideoItem",
    "ErrorRow",
    "FilteredRow",
    "Manifest",
    "DATASETS",
    "AdapterOptions",
    "load_manifest",
    "normalise_class_name",
]


@dataclass
class VideoItem:
    key: str
    source: str  # URL or path of the video
    label: int
    label_name: str
    split: str
    pose_url: str | None = None  # precomputed pose file, when one was found
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ErrorRow:
    source: str
    stage: str
    reason: str
    split: str = ""
    key: str = ""


@dataclass
class FilteredRow:
    """An annotation row left out on purpose (its class is not among the classes built)."""

    source: str
    key: str
    split: str
    label_name: str
    reason: str


@dataclass
class Manifest:
    dataset: str
    classes: list[str]
    items: list[VideoItem]
    errors: list[ErrorRow] = field(default_factory=list)
    listed: int = 0  # annotation rows read
    filtered_rows: list[FilteredRow] = field(default_factory=list)  # rows outside --classes
    missing: int = 0  # listed but no video file
    unlisted: int = 0  # video files present but not in the annotations
    person_order: str = "score"
    pose_layout: str | None = None  # layout of precomputed poses, if the dataset has a native one

    @property
    def filtered(self) -> int:
        return len(self.filtered_rows)

    def splits(self) -> list[str]:
        return sorted(
            {item.split for item in self.items} | {e.split for e in self.errors if e.split}
        )

    def to_table(self) -> pa.Table:
        rows = [asdict(item) | {"extra": str(item.extra)} for item in self.items]
        return pa.Table.from_pylist(rows) if rows else pa.table({"key": pa.array([], pa.string())})


@dataclass
class AdapterOptions:
    videos: str
    annotations: str | None = None
    poses: str | None = None
    classes_file: str | None = None
    split: str | None = None
    protocol: str | None = None


def normalise_class_name(name: str) -> str:
    """Compare class names loosely: case, quotes, underscores and spacing do not matter."""
    return " ".join(name.strip().strip("\"'").replace("_", " ").lower().split())


def _adapters() -> dict[str, Callable[[AdapterOptions], Manifest]]:
    from .generic import load_generic
    from .kinetics import load_kinetics, load_mimetics
    from .ntu import load_ntu

    return {
        "kinetics": load_kinetics,
        "mimetics": load_mimetics,
        "ntu": load_ntu,
        "generic": load_generic,
    }


DATASETS = ("kinetics", "mimetics", "ntu", "generic")


def load_manifest(dataset: str, options: AdapterOptions) -> Manifest:
    if dataset not in DATASETS:
        raise InvalidInput(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    manifest = _adapters()[dataset](options)
    if options.split is not None:
        wanted = {s.strip() for s in options.split.split(",") if s.strip()}
        manifest.items = [i for i in manifest.items if i.split in wanted]
        manifest.errors = [e for e in manifest.errors if not e.split or e.split in wanted]
        manifest.filtered_rows = [r for r in manifest.filtered_rows if r.split in wanted]
        if not manifest.items:
            raise InvalidInput(f"no videos in split(s) {options.split!r}")
    return manifest
