"""`pipeline inspect URL`: what a built dataset holds, from dataset.json, the indexes and listings.

Reads no shard bytes: counts come from index.parquet and errors.parquet, sizes from the shard
tars' sizes in the folder listing, so it is instant even on a large dataset in object storage.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..errors import user_errors
from ..report import human_bytes
from ..shards import KINDS, Dataset, shard_entries
from ..skeletons import get_layout
from ._click import CONTEXT

__all__ = ["inspect_dataset", "collect_stats", "render_stats"]

MAX_PERSONS_BINS = 6  # persons histogram bins 0..5 (the build keeps at most 5 persons)
MAX_CLASS_ROWS = 30  # beyond this many classes the table shows a summary (the JSON has all)


def _dataset_summary(ds: Dataset) -> dict[str, Any]:
    info = ds.info
    layout = get_layout(info.layout)
    return {
        "root": ds.root,
        "dataset": info.dataset,
        "format_version": info.format_version,
        "pipeline_version": info.pipeline_version,
        "layout": info.layout,
        "joints": layout.num_joints,
        "bones": layout.num_bones,
        "raster_channels": layout.num_channels,
        "person_order": info.person_order,
        "classes": len(info.classes),
        "frame_stride": info.frame_stride,
        "short_side": info.short_side,
        "pose": info.build.get("pose"),
    }


def _split_stats(ds: Dataset, split: str) -> dict[str, Any]:
    part = ds.split(split)
    rows = part.index_rows()
    errors = part.error_rows()
    classes = ds.info.classes
    n = len(rows)

    per_class: Counter[str] = Counter({name: 0 for name in classes})
    for row in rows:
        label = row["label"]
        in_range = label is not None and 0 <= label < len(classes)
        per_class[classes[label] if in_range else f"?{row['label_name']}"] += 1

    frames = [int(r["num_frames"]) for r in rows]
    persons = Counter(min(int(r["num_persons"]), MAX_PERSONS_BINS - 1) for r in rows)
    fractions = [float(r["person_fraction"]) for r in rows]
    sizes = Counter(f"{r['height']}x{r['width']}" for r in rows)

    # Bytes on disk per kind (tar overhead included), from the listing: no shard is read.
    shards = shard_entries(part.entries())
    tar_bytes = {kind: sum(e.size for e in shards[kind].values()) for kind in KINDS}
    tar_bytes["total"] = sum(tar_bytes.values())
    stages = Counter(str(e["stage"]) for e in errors)
    return {
        "samples": n,
        "shards": {kind: len(shards[kind]) for kind in KINDS},
        "frames": sum(frames),
        "source_frames": sum(int(r["source_frames"]) for r in rows),
        "frames_per_video": {
            "mean": statistics.fmean(frames) if frames else 0.0,
            "min": min(frames, default=0),
            "max": max(frames, default=0),
        },
        "frame_sizes": dict(sizes.most_common()),
        "classes": dict(per_class),
        "classes_with_samples": sum(1 for v in per_class.values() if v),
        "pose": {
            "mean_person_fraction": statistics.fmean(fractions) if fractions else 0.0,
            "no_person": sum(1 for f in fractions if f == 0.0),
            "persons_histogram": {str(p): persons.get(p, 0) for p in range(MAX_PERSONS_BINS)},
        },
        "bytes": tar_bytes,
        "bytes_per_video": {k: (v / n if n else 0.0) for k, v in tar_bytes.items()},
        "errors": {"total": len(errors), "by_stage": dict(sorted(stages.items()))},
    }


def collect_stats(ds: Dataset, splits: list[str]) -> dict[str, Any]:
    """Everything `inspect` reports, as plain JSON-able data."""
    per_split = {split: _split_stats(ds, split) for split in splits}
    return {
        "dataset": _dataset_summary(ds),
        "splits": per_split,
        "totals": {
            "samples": sum(s["samples"] for s in per_split.values()),
            "frames": sum(s["frames"] for s in per_split.values()),
            "bytes": sum(s["bytes"]["total"] for s in per_split.values()),
            "errors": sum(s["errors"]["total"] for s in per_split.values()),
        },
    }


def _dataset_table(d: dict[str, Any]) -> Table:
    table = Table(title=f"dataset: {d['root']}", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("dataset", str(d["dataset"]))
    table.add_row("format / pipeline", f"v{d['format_version']} / {d['pipeline_version']}")
    table.add_row(
        "layout",
        f"{d['layout']}: {d['joints']} joints, {d['bones']} bones, "
        f"{d['raster_channels']} raster channels",
    )
    table.add_row("person axis", f"{d['person_order']} (pose: {d['pose']})")
    table.add_row("classes", str(d["classes"]))
    stride, side = d["frame_stride"], d["short_side"]
    table.add_row("frames kept", f"every {stride} source frames, short side {side}")
    return table


def _split_table(splits: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="splits")
    table.add_column("", style="bold")
    for name in splits:
        table.add_column(name, justify="right")

    def row(label: str, fn: Any) -> None:
        table.add_row(label, *(fn(s) for s in splits.values()))

    row("samples", lambda s: str(s["samples"]))
    row("shards (rgb/pose/raster)", lambda s: "/".join(str(s["shards"][k]) for k in KINDS))
    row("frames kept", lambda s: f"{s['frames']:,}")
    fpv = "frames_per_video"
    row("frames per video", lambda s: f"{s[fpv]['mean']:.1f} ({s[fpv]['min']}-{s[fpv]['max']})")
    row(
        "frame sizes (HxW)",
        lambda s: ", ".join(f"{k} ({v})" for k, v in list(s["frame_sizes"].items())[:3]),
    )
    row("mean person fraction", lambda s: f"{s['pose']['mean_person_fraction']:.2f}")
    row("videos with no person", lambda s: str(s["pose"]["no_person"]))
    row(
        "persons 0/1/2/3/4/5",
        lambda s: "/".join(str(v) for v in s["pose"]["persons_histogram"].values()),
    )
    for kind in (*KINDS, "total"):
        row(
            f"{kind} bytes (per video)",
            lambda s, k=kind: (
                f"{human_bytes(s['bytes'][k])} ({human_bytes(s['bytes_per_video'][k])})"
            ),
        )
    row(
        "errors",
        lambda s: (
            str(s["errors"]["total"])
            + (
                " (" + ", ".join(f"{k} {v}" for k, v in s["errors"]["by_stage"].items()) + ")"
                if s["errors"]["by_stage"]
                else ""
            )
        ),
    )
    return table


def _class_table(splits: dict[str, dict[str, Any]]) -> Table:
    names = list(next(iter(splits.values()))["classes"]) if splits else []
    for s in splits.values():  # labels outside the class list, if any
        names += [n for n in s["classes"] if n not in names]
    table = Table(title="samples per class")
    if len(names) <= MAX_CLASS_ROWS:
        table.add_column("class", style="bold")
        for split in splits:
            table.add_column(split, justify="right")
        for name in names:
            table.add_row(name, *(str(s["classes"].get(name, 0)) for s in splits.values()))
        return table
    table.add_column("", style="bold")
    for split in splits:
        table.add_column(split, justify="right")
    counts = {k: sorted(s["classes"].values()) for k, s in splits.items()}
    table.add_row(
        "classes with samples", *(str(s["classes_with_samples"]) for s in splits.values())
    )
    spread = (f"{c[0]} / {statistics.median(c):g} / {c[-1]}" for c in counts.values())
    table.add_row("min / median / max", *spread)
    table.caption = f"{len(names)} classes; --json lists every class"
    return table


def render_stats(stats: dict[str, Any], console: Console) -> None:
    console.print(_dataset_table(stats["dataset"]))
    console.print(_split_table(stats["splits"]))
    console.print(_class_table(stats["splits"]))


@click.command("inspect", context_settings=CONTEXT)
@click.argument("url", metavar="URL")
@click.option("--split", metavar="NAMES", help="Only these splits (comma separated).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead.")
@click.option("--keys", is_flag=True, help="List the samples instead: split, key, class, frames.")
@user_errors
def inspect_dataset(url: str, split: str | None, as_json: bool, keys: bool) -> None:
    """Summarise a built dataset: samples per split and class, pose coverage, sizes, errors.

    URL is the dataset root (where dataset.json is) or one of its split folders, local or
    s3://. Only dataset.json, the Parquet indexes and the folder listings are read.
    """
    if as_json and keys:
        raise click.UsageError("--json and --keys: give one (--keys lists samples as text)")
    ds = Dataset.open(url)
    splits = ds.select(split)
    if keys:
        # Tab-separated, one sample a line: greppable, and how users find KEY for `show`.
        for name in splits:
            for row in ds.split(name).index_rows():
                click.echo(f"{name}\t{row['key']}\t{row['label_name']}\t{row['num_frames']}")
        return
    stats = collect_stats(ds, splits)
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    render_stats(stats, Console())
