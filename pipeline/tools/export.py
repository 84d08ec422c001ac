"""`pipeline export URL --format mmaction -o poses.pkl`: keypoints for pyskl / mmaction2 users.

Reads only the pose shards (never an rgb or raster byte) and writes one pickle in pyskl's layout
(see :mod:`pipeline.formats.mmaction_pickle`), one annotation per sample:

- ``frame_dir``: the key; ``label``: the class index of dataset.json; ``label_name``;
- ``img_shape``: the stored frame (height, width), the frame the keypoints are in pixels of;
  ``original_shape``: the source video's (height, width);
- ``total_frames``: the number of *kept* frames F (every frame_stride-th source frame), which is
  the time axis of ``keypoint``; the source frame of each is in ``source_frame_inds`` (int32
  [F]; not ``frame_inds``, which mmaction's samplers write and PoseDecode reads) and the source
  video's frame count in ``source_total_frames``; ``frame_stride`` and ``fps`` (source fps)
  are copied too;
- ``keypoint`` float32 [M, T, V, 2] and ``keypoint_score`` float32 [M, T, V]: the stored person
  axis as it is (dataset.json ``person_order`` says whether it follows tracks), zeros where a
  person is absent. A sample with no person in any frame (M = 0 in the shard) gets one all-zero
  person, since pyskl's transforms expect M >= 1.

``split`` maps each exported split name to its keys in index order.
"""

from __future__ import annotations

import io
from typing import Any

import click
import numpy as np

from .. import storage
from ..errors import user_errors
from ..formats.mmaction_pickle import write_mmaction_pickle
from ..report import human_bytes
from ..shards import decode_pose, group_members, iter_tar, shard_name
from ._click import CONTEXT
from ._dataset import Dataset, open_dataset, shard_numbers
from ._progress import shard_progress

__all__ = ["export", "collect_annotations", "to_annotation"]


def to_annotation(
    key: str, keypoints: np.ndarray, frames: np.ndarray, meta: dict[str, Any], row: dict[str, Any]
) -> dict[str, Any]:
    """One pyskl annotation from a pose sample [F, P, K, 3] and its index row."""
    f, p, k, _ = keypoints.shape
    if p == 0:
        keypoints = np.zeros((f, 1, k, 3), np.float32)
    person_major = np.ascontiguousarray(keypoints.transpose(1, 0, 2, 3), dtype=np.float32)
    height, width = int(row["height"]), int(row["width"])
    return {
        "frame_dir": key,
        "label": int(row["label"]),
        "label_name": str(row["label_name"]),
        "img_shape": (height, width),
        "original_shape": (
            int(meta.get("source_height", height)),
            int(meta.get("source_width", width)),
        ),
        "total_frames": int(f),
        "keypoint": person_major[..., :2].copy(),
        "keypoint_score": person_major[..., 2].copy(),
        "source_frame_inds": np.asarray(frames, dtype=np.int32),
        "source_total_frames": int(row["source_frames"]),
        "frame_stride": int(meta.get("frame_stride", 0)) or None,
        "fps": float(row["fps"]),
    }


def collect_annotations(
    ds: Dataset, splits: list[str], show_progress: bool = False
) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """(annotations, split name -> keys) of ``splits``, read from their pose shards only."""
    rows_of = {s: ds.index_rows(s) for s in splits}
    seen: dict[str, str] = {}
    for split, rows in rows_of.items():
        for row in rows:
            other = seen.setdefault(row["key"], split)
            if other != split:
                raise ValueError(
                    f"key {row['key']!r} is in splits {other} and {split}; pyskl needs unique "
                    "frame_dirs: export one split at a time with --split"
                )
    pose_shards = {s: sorted(shard_numbers(ds.entries(s))["pose"]) for s in splits}
    total = sum(len(v) for v in pose_shards.values())
    annotations: list[dict[str, Any]] = []
    with shard_progress(total, "export", show_progress) as advance:
        for split in splits:
            index = {r["key"]: r for r in rows_of[split]}
            found: set[str] = set()
            for number in pose_shards[split]:
                url = storage.join(ds.split_url(split), shard_name("pose", number))
                with storage.open_file(url) as f:
                    for key, group in group_members(iter_tar(f)):
                        row = index.get(key)
                        if row is None:
                            raise ValueError(
                                f"{split}/{shard_name('pose', number)}: sample {key!r} has no "
                                "index row; run pipeline verify"
                            )
                        keypoints, frames, meta = decode_pose(group)
                        annotations.append(to_annotation(key, keypoints, frames, meta, row))
                        found.add(key)
                advance(label=f"{split}/{shard_name('pose', number)}")
            missing = [k for k in index if k not in found]
            if missing:
                raise ValueError(
                    f"{split}: {len(missing)} index row(s) have no pose sample "
                    f"(first: {missing[0]!r}); run pipeline verify"
                )
    return annotations, {s: [r["key"] for r in rows_of[s]] for s in splits}


@click.command("export", context_settings=CONTEXT)
@click.argument("url", metavar="URL")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mmaction"]),
    required=True,
    help="mmaction: the pyskl / mmaction2 skeleton annotation pickle.",
)
@click.option("-o", "--out", required=True, metavar="FILE", help="Output .pkl (path or URL).")
@click.option("--split", metavar="NAMES", help="Only these splits (comma separated).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def export(url: str, fmt: str, out: str, split: str | None, quiet: bool) -> None:
    """Export the keypoints to another tool's format, reading only the pose shards.

    The pickle keeps the stored person axis (dataset.json person_order: 'track' when persons
    follow tracks) and the kept frames: total_frames is the number of kept frames, and each
    annotation's source_frame_inds gives their source frame indices.
    """
    ds = open_dataset(url)
    splits = ds.select(split)
    annotations, split_keys = collect_annotations(ds, splits, show_progress=not quiet)
    buf = io.BytesIO()
    write_mmaction_pickle(buf, annotations, split_keys)
    storage.write_bytes_atomic(out, buf.getvalue())
    counts = ", ".join(f"{s} {len(k)}" for s, k in split_keys.items())
    click.echo(
        f"wrote {out} ({human_bytes(len(buf.getvalue()))}): {len(annotations)} samples "
        f"({counts}), layout {ds.info.layout}, person axis: {ds.info.person_order}"
    )
