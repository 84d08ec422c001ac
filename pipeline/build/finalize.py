"""The end of a build: each split's tables assembled from the shard records, and dataset.json.

Runs after every shard task (also when all shards were already done), so a resumed build ends
with the same files as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .. import __version__, storage
from ..datasets import FilteredRow, Manifest
from ..errors import UserError
from ..shards import (
    ERRORS_PARQUET,
    ERRORS_SCHEMA,
    FILTERED_PARQUET,
    FILTERED_SCHEMA,
    INDEX_PARQUET,
    INDEX_SCHEMA,
    DatasetInfo,
    stored_size,
    write_table,
)
from .options import BuildOptions
from .plan import ShardSpec
from .state import read_record

__all__ = [
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_FAILED",
    "BuildSummary",
    "IncompleteBuild",
    "finalize",
]

# Exit codes of `pipeline build` a scheduler can act on (1 is a user error before the build
# starts, 2 a command-line mistake; both click's).
EXIT_OK = 0  # every planned video was written
EXIT_PARTIAL = 3  # some videos failed, a fraction within --max-error-fraction
EXIT_FAILED = 4  # more failed than that, or no sample was written at all


class IncompleteBuild(UserError, RuntimeError):
    """Some shards did not finish (a task died); rerunning the command resumes them."""


@dataclass
class BuildSummary:
    out: str
    listed: int = 0
    filtered: int = 0  # annotation rows left out on purpose (filtered.parquet)
    missing: int = 0
    unlisted: int = 0
    videos: int = 0  # videos planned in this build (after --limit)
    samples: int = 0
    no_person: int = 0
    errors_by_stage: dict[str, int] = field(default_factory=dict)
    shards: int = 0
    shards_resumed: int = 0
    bytes_by_kind: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    retried: int = 0  # videos reprocessed by --retry-errors
    max_error_fraction: float = 0.05

    @property
    def videos_per_second(self) -> float:
        return self.videos / self.seconds if self.seconds > 0 else 0.0

    @property
    def failed(self) -> int:
        """Videos that could not be used: every row of errors.parquet (missing files too)."""
        return sum(self.errors_by_stage.values())

    @property
    def error_fraction(self) -> float:
        """Failed videos over every video the annotations asked for (built or failed)."""
        total = self.samples + self.failed
        return self.failed / total if total else 0.0

    @property
    def exit_code(self) -> int:
        if self.samples == 0:
            return EXIT_FAILED
        if self.failed == 0:
            return EXIT_OK
        return EXIT_PARTIAL if self.error_fraction <= self.max_error_fraction else EXIT_FAILED

    def count_error(self, stage: str, n: int = 1) -> None:
        self.errors_by_stage[stage] = self.errors_by_stage.get(stage, 0) + n


def _error_row(row: dict[str, Any], split: str) -> dict[str, Any]:
    return {name: str(row.get(name) or "") for name in ERRORS_SCHEMA.names} | {"split": split}


def _filtered_row(row: FilteredRow) -> dict[str, Any]:
    return {name: str(getattr(row, name)) for name in FILTERED_SCHEMA.names}


def finalize(
    options: BuildOptions,
    manifest: Manifest,
    plan: dict[str, list[ShardSpec]],
    layout: str,
    tracked: bool,
    summary: BuildSummary,
) -> None:
    """Write each split's index.parquet, errors.parquet and filtered.parquet, then dataset.json."""
    split_info: dict[str, dict[str, Any]] = {}
    incomplete = []
    # Every manifest error names its split; one that cannot (none so far) goes to the first.
    first = min(plan)
    for split, specs in plan.items():
        index_rows: list[dict[str, Any]] = []
        error_rows = [
            _error_row(asdict(e), split)
            for e in manifest.errors
            if e.split == split or (not e.split and split == first)
        ]
        for e in error_rows:
            summary.count_error(e["stage"])
        for spec in specs:
            record = read_record(options.out, split, spec.number)
            if record is None:
                incomplete.append(f"{split}/{spec.number:06d}")
                continue
            index_rows += record.index
            error_rows += [_error_row(e, split) for e in record.errors]
            for key, value in record.stats.items():
                if key.startswith("error:"):
                    summary.count_error(key.split(":", 1)[1], value)
            summary.samples += record.stats.get("samples", 0)
            summary.no_person += record.stats.get("no_person", 0)
            for kind, n in record.bytes.items():
                summary.bytes_by_kind[kind] = summary.bytes_by_kind.get(kind, 0) + n
        split_url = storage.join(options.out, split)
        write_table(storage.join(split_url, INDEX_PARQUET), index_rows, INDEX_SCHEMA)
        write_table(storage.join(split_url, ERRORS_PARQUET), error_rows, ERRORS_SCHEMA)
        filtered = [_filtered_row(r) for r in manifest.filtered_rows if r.split == split]
        write_table(storage.join(split_url, FILTERED_PARQUET), filtered, FILTERED_SCHEMA)
        split_info[split] = {
            "samples": len(index_rows),
            "shards": len(specs),
            "errors": len(error_rows),
            "filtered": len(filtered),
            "frames": int(sum(r["num_frames"] for r in index_rows)),
        }
        summary.splits[split] = {
            "samples": len(index_rows),
            "errors": len(error_rows),
            "filtered": len(filtered),
        }
    if incomplete:
        raise IncompleteBuild(
            f"{len(incomplete)} shard(s) did not finish ({', '.join(incomplete[:5])}); "
            "run the same command again to resume"
        )
    info = DatasetInfo(
        dataset=manifest.dataset,
        classes=manifest.classes,
        layout=layout,
        person_order="track" if tracked else "score",
        frame_stride=options.frame_stride,
        short_side=options.short_side,
        splits=split_info,
        seed=options.seed,
        build={
            "pose": options.pose,
            "poses_fps": options.poses_fps,
            "protocol": options.protocol,
            "samples_per_shard": max((len(s.items) for v in plan.values() for s in v), default=0),
            "limit": options.limit,
            "videos": options.videos,
            "annotations": options.annotations,
            "pipeline_version": __version__,
            "person_rules": options.person_rules(),
            "stored_size_example": list(stored_size(1080, 1920, options.short_side)),
        },
    )
    info.save(options.out)
