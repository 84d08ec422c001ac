"""`pipeline verify URL`: check a built dataset against shard format v1, one line per problem.

What is checked (docs/tools.md lists it for users):
- dataset.json parses, has format version 1, a known layout whose joints and bones it repeats,
  a class list and a frame stride; no temporary ``.tmp-*`` file is left anywhere.
- Per split: index.parquet and errors.parquet read with their columns; keys unique; each index
  row is sane (label in range, sides multiples of 4, ...); the same shard numbers exist for rgb,
  pose and raster; every tar parses to its end-of-archive marker.
- Per shard number: the pose shard holds exactly the index rows whose ``shard`` is that number,
  in index order; rgb and raster hold the same keys in the same order.
- Per sample: keypoints float32 [F, P, K, 3], finite, P <= max persons; frames.npy int32 [F],
  increasing multiples of the frame stride; F and P equal the index; the JSON agrees with the
  index; the rgb members are exactly KEY.NNNNNN.jpg of those frames and decode to height x
  width x 3 (--deep: every frame; else the first); the raster npz holds uint8 heatmaps
  [F, K, h, w] and int8 PAFs [F, 2B, h, w] at a quarter of the frame size (--deep: read and
  CRC-checked in full; else from the array headers).
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import click
import numpy as np

from .. import storage
from ..errors import InvalidInput, user_errors
from ..progress import Advance, progress
from ..shards import (
    DATASET_JSON,
    ERRORS_PARQUET,
    INDEX_PARQUET,
    KINDS,
    Dataset,
    is_temporary,
    list_entries,
    read_dataset_json,
    resolve_dataset_root,
    shard_entries,
    shard_name,
)
from ..shards.reader import TarDamaged, scan_tar
from ..skeletons import Layout
from ._checks import (
    Context,
    Report,
    check_dataset_json,
    check_index_rows,
    check_pose_sample,
    check_raster_sample,
    check_rgb_sample,
    names,
)
from ._click import CONTEXT

__all__ = ["verify", "verify_dataset"]


# ---------------------------------------------------------------------------------------------
# Shards


def _scan(
    url: str, where: str, report: Report, check: Callable[[str, dict[str, bytes]], None]
) -> list[str] | None:
    """Stream one tar, calling ``check`` on each sample; its keys in order, None if damaged.

    Samples are checked as they stream by, so memory holds one sample, not the shard.
    """
    keys: list[str] = []
    try:
        for sample in scan_tar(url):
            key = sample.pop("__key__")
            keys.append(key)
            check(key, {k: v for k, v in sample.items() if not k.startswith("__")})
    except TarDamaged as exc:
        report.add(where, str(exc))
        return None
    except OSError as exc:
        report.add(where, f"cannot read ({exc})")
        return None
    return keys


def _compare_keys(
    got: list[str], want: list[str], ref: str, where: str, report: Report, index: dict | None
) -> None:
    """Problems when ``got`` (the keys of a shard) is not ``want`` (``ref``'s) in the same order.

    ``index`` (key -> row), when given, tells a sample filed under another shard from one that
    has no index row at all.
    """
    dups = [k for k, n in Counter(got).items() if n > 1]
    if dups:
        report.add(where, f"key(s) appear more than once: {names(dups)}")
    if got == want:
        return
    missing, extra = set(want) - set(got), set(got) - set(want)
    for key in sorted(missing):
        report.add(where, f"{key} is in {ref} but has no sample here")
    for key in sorted(extra):
        row = index.get(key) if index is not None else None
        if row is not None:
            report.add(where, f"{key} is here but the index puts it in shard {row['shard']}")
        else:
            report.add(where, f"{key} is here but not in {ref}")
    if not missing and not extra and not dups:
        i = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
        report.add(
            where, f"samples not in the order of {ref} (position {i}: {got[i]}, expected {want[i]})"
        )


def verify_shard_set(
    split: str,
    number: int,
    present: dict[str, bool],
    want_keys: list[str] | None,
    ctx: Context,
    report: Report,
    advance: Advance,
) -> None:
    """Check the shards of one number (the kinds in ``present``) against the index and each
    other."""
    frames_of: dict[str, np.ndarray | None] = {}
    # The checks below read `where` when called: the shard being scanned.

    def check_pose(key: str, group: dict[str, bytes]) -> None:
        frames_of[key] = check_pose_sample(key, group, ctx, where, report)
        report.samples += 1

    def check_rgb(key: str, group: dict[str, bytes]) -> None:
        check_rgb_sample(key, group, frames_of.get(key), ctx, where, report)

    def check_raster(key: str, group: dict[str, bytes]) -> None:
        check_raster_sample(key, group, frames_of.get(key), ctx, where, report)

    pose_keys: list[str] | None = None
    # Pose first: it says which frames the rgb shard must hold.
    for kind, check in (("pose", check_pose), ("rgb", check_rgb), ("raster", check_raster)):
        if not present.get(kind):
            continue
        name = shard_name(kind, number)
        where = f"{split}/{name}"
        keys = _scan(storage.join(ctx.split_url, name), where, report, check)
        advance(label=where)
        report.shards += 1
        if keys is None:
            continue
        if kind == "pose":
            pose_keys = keys
            if want_keys is not None:
                _compare_keys(keys, want_keys, "the index", where, report, ctx.index)
        elif pose_keys is not None:
            _compare_keys(keys, pose_keys, shard_name("pose", number), where, report, None)


def _check_temporaries(entries: dict[str, Any], where: str, report: Report) -> None:
    for name in sorted(entries):
        if is_temporary(name):
            report.add(
                f"{where}/{name}" if where else name,
                "leftover temporary file of an unfinished write "
                "(rerun the build to resume; it removes these)",
            )


def verify_split(
    ds: Dataset,
    split: str,
    layout: Layout,
    deep: bool,
    report: Report,
    advance: Advance,
    kinds: tuple[str, ...] = KINDS,
) -> None:
    report.splits += 1
    part = ds.split(split)
    entries = part.entries()
    if not entries:
        report.add(split, "split folder is missing or empty")
        return
    _check_temporaries(entries, split, report)
    for name in sorted(entries):
        if name.endswith(".tar") and not is_temporary(name) and name not in _shard_files(entries):
            report.add(f"{split}/{name}", "unexpected tar (shards are rgb|pose|raster-NNNNNN.tar)")

    rows: list[dict[str, Any]] | None
    try:
        rows = part.index_rows()
    except (FileNotFoundError, ValueError) as exc:
        report.add(f"{split}/{INDEX_PARQUET}", str(exc).splitlines()[0])
        rows = None
    if ERRORS_PARQUET not in entries:
        report.add(f"{split}/{ERRORS_PARQUET}", "missing")
    else:
        try:
            part.error_rows()
        except ValueError as exc:
            report.add(f"{split}/{ERRORS_PARQUET}", str(exc))

    shards = shard_entries(entries)
    numbers = sorted(set().union(*(set(shards[k]) for k in KINDS)))
    for number in numbers:
        have = [k for k in KINDS if number in shards[k]]
        for kind in kinds:
            if number not in shards[kind]:
                report.add(
                    f"{split}/{shard_name(kind, number)}", f"missing ({', '.join(have)} exist)"
                )
    listed = ds.raw.get("splits", {}).get(split) if isinstance(ds.raw.get("splits"), dict) else None
    if isinstance(listed, dict):
        if rows is not None and listed.get("samples", len(rows)) != len(rows):
            report.add(
                DATASET_JSON, f"split {split}: {listed['samples']} samples, index has {len(rows)}"
            )
        if listed.get("shards", len(numbers)) != len(numbers):
            report.add(
                DATASET_JSON, f"split {split}: {listed['shards']} shards, folder has {len(numbers)}"
            )

    index: dict[str, dict[str, Any]] = {}
    want: dict[int, list[str]] | None = None
    if rows is not None:
        info = ds.info
        where = f"{split}/{INDEX_PARQUET}"
        check_index_rows(rows, info.classes, info.raster.max_persons, where, report)
        if not rows:
            report.add(where, "no samples: every video of the split failed or was filtered")
        want = {}
        for row in rows:
            index.setdefault(row["key"], row)
            want.setdefault(row["shard"], []).append(row["key"])
        for number in sorted(set(want) - set(numbers), key=lambda n: (n is None, n)):
            report.add(
                where,
                f"{len(want[number])} row(s) in shard {number}, which has no tars "
                f"({names(want[number])})",
            )
    ctx = Context(
        layout=layout,
        stride=ds.info.frame_stride,
        max_persons=ds.info.raster.max_persons,
        deep=deep,
        split_url=part.url,
        index=index,
    )
    for number in numbers:
        present = {k: number in shards[k] for k in kinds}
        want_keys = want.get(number, []) if want is not None else None
        verify_shard_set(split, number, present, want_keys, ctx, report, advance)


def _shard_files(entries: dict[str, Any], kinds: tuple[str, ...] = KINDS) -> set[str]:
    shards = shard_entries(entries)
    return {shard_name(k, n) for k in kinds for n in shards[k]}


def verify_dataset(
    url: str,
    split: str | None = None,
    deep: bool = False,
    show_progress: bool = False,
    kinds: tuple[str, ...] = KINDS,
) -> Report:
    """Check a dataset (root or split folder, local or s3://); the report lists the problems.

    Raises FileNotFoundError when URL is not a dataset at all, ValueError for an unknown split.
    """
    root, _ = resolve_dataset_root(url)
    report = Report()
    _check_temporaries(list_entries(root), "", report)
    try:
        raw = read_dataset_json(root)
    except ValueError as exc:
        report.add(DATASET_JSON, str(exc).splitlines()[0])
        return report
    layout = check_dataset_json(raw, report)
    if layout is None:
        return report
    try:
        ds = Dataset.open(url)
    except ValueError as exc:
        report.add(DATASET_JSON, str(exc).splitlines()[0])
        return report
    splits = ds.select(split)
    total = sum(len(_shard_files(ds.split(s).entries(), kinds)) for s in splits)
    with progress(total, "verify", "shards", show_progress) as advance:
        for name in splits:
            verify_split(ds, name, layout, deep, report, advance, kinds)
    return report


@click.command("verify", context_settings=CONTEXT)
@click.argument("url", metavar="URL")
@click.option("--split", metavar="NAMES", help="Only these splits (comma separated).")
@click.option(
    "--deep/--no-deep",
    default=False,
    show_default=True,
    help="Decode every JPEG and read every raster in full (default: the first frame of each "
    "sample and the raster array headers).",
)
@click.option(
    "--max-problems",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Print at most this many problem lines (all are counted).",
)
@click.option(
    "--only",
    metavar="KINDS",
    default=",".join(KINDS),
    show_default=True,
    help="Check only these shard kinds (comma separated), e.g. --only pose for a copy that "
    "holds only the pose shards.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def verify(
    url: str, split: str | None, deep: bool, max_problems: int, only: str, quiet: bool
) -> None:
    """Check that a built dataset is complete and consistent (shard format v1).

    Every shard must parse, hold the index's keys in the index's order (aligned across rgb, pose
    and raster), and every sample must have the documented members, dtypes and shapes. Prints
    one line per problem and exits 1 if there is any; exit 0 means the dataset is clean.
    """
    kinds = tuple(k.strip() for k in only.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise InvalidInput(f"--only {only}: kinds are {', '.join(KINDS)}")
    report = verify_dataset(url, split, deep, show_progress=not quiet, kinds=kinds)
    mode = "deep" if deep else "shallow"
    checked = f"{report.splits} split(s), {report.shards} shards, {report.samples} samples"
    for line in report.problems[:max_problems]:
        click.echo(line)
    hidden = len(report.problems) - max_problems
    if hidden > 0:
        click.echo(f"... and {hidden} more")
    if report.problems:
        click.echo(f"FAILED: {len(report.problems)} problem(s) in {checked} ({mode} check)")
        sys.exit(1)
    click.echo(f"OK: {checked}, no problems ({mode} check)")
