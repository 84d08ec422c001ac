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

from .. import __version__, storage
from ..errors import InvalidInput
from ..skeletons import get_layout

FORMAT_VERSION = 1
DATASET_JSON = "dataset.json"
SIZE_MULTIPLE = 4  # stored sides are multiples of 4 so that the raster is exactly a quarter

__all__ = [
    "FORMAT_VERSION",
    "RasterParams",
    "DatasetInfo",
    "stored_size",
    "DATASET_JSON",
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
            raise InvalidInput(
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
