"""`pipeline export URL --format mmaction -o poses.pkl`: keypoints for pyskl / mmaction2 users.

Reads only the pose shards (never an rgb or raster byte) and writes one pickle in pyskl's layout
(see :mod:`pipeline.formats.mmaction_pickle`), one annotation per sample:

- ``frame_dir``: the key (for NTU, without the ``_rgb`` of the video file name, as pyskl's own
  NTU pickles name their samples); ``label``: the class index of dataset.json; ``label_name``;
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

``split`` maps each exported split name to its frame_dirs in index order. NTU splits are named
as in pyskl's NTU pickles, ``<protocol>_train`` / ``<protocol>_val`` (``xsub_train``,
``xview_val``, ``xset_train``, ...), so that existing PoseC3D / ST-GCN++ configs load the file
unchanged; other datasets keep their split names (``train``, ``val``, ``test``).
"""

from __future__ import annotations

import io
from typing import Any

import click
import numpy as np

from ..errors import InvalidInput, user_errors
from ..formats.mmaction_pickle import write_mmaction_pickle
from ..progress import progress
from ..report import human_bytes
from ..shards import Dataset, ErrorLog, decode_pose
from ..storage import check_output_file, write_output_file
from ._click import CONTEXT

__all__ = ["export", "collect_annotations", "to_annotation"]


def pyskl_names(ds: Dataset) -> tuple[Any, Any]:
    """(key -> frame_dir, split -> pyskl split name) for the dataset's kind (see module doc)."""
    if ds.info.dataset != "ntu":
        return (lambda key: key), (lambda split: split)
    protocol = ds.info.build.get("protocol") or "xsub"
    return (lambda key: key.removesuffix("_rgb")), (lambda split: f"{protocol}_{split}")


def to_annotation(
    frame_dir: str,
    keypoints: np.ndarray,
    frames: np.ndarray,
    meta: dict[str, Any],
    row: dict[str, Any],
) -> dict[str, Any]:
    """One pyskl annotation from a pose sample [F, P, K, 3] and its index row."""
    f, p, k, _ = keypoints.shape
    if p == 0:
        keypoints = np.zeros((f, 1, k, 3), np.float32)
    person_major = np.ascontiguousarray(keypoints.transpose(1, 0, 2, 3), dtype=np.float32)
    height, width = int(row["height"]), int(row["width"])
    return {
        "frame_dir": frame_dir,
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
    """(annotations, pyskl split name -> frame_dirs) of ``splits``, from their pose shards only.

    A damaged shard or a sample missing from the shards is an error, not a shorter export.
    """
    frame_dir, split_name = pyskl_names(ds)
    rows_of = {s: ds.split(s).index_rows() for s in splits}
    seen: dict[str, str] = {}
    for split, rows in rows_of.items():
        for row in rows:
            other = seen.setdefault(frame_dir(row["key"]), split)
            if other != split:
                raise InvalidInput(
                    f"key {row['key']!r} is in splits {other} and {split}; pyskl needs unique "
                    "frame_dirs: export one split at a time with --split"
                )
    annotations: list[dict[str, Any]] = []
    total = sum(len(rows) for rows in rows_of.values())
    with progress(total, "export", "samples", show_progress) as advance:
        for split in splits:
            index = {r["key"]: r for r in rows_of[split]}
            found: set[str] = set()
            log = ErrorLog()
            for sample in ds.split(split).pipeline(kinds=("pose",), log=log):
                key = sample["__key__"]
                if key not in index:
                    raise InvalidInput(
                        f"{split}: sample {key!r} of shard {sample['__shard__']} has no index "
                        "row; run pipeline verify"
                    )
                keypoints, frames, meta = decode_pose(sample)
                row = index[key]
                annotations.append(to_annotation(frame_dir(key), keypoints, frames, meta, row))
                found.add(key)
                advance(label=split)
            if log.pending:
                raise InvalidInput(f"{log.pending[0]}; run pipeline verify")
            missing = [k for k in index if k not in found]
            if missing:
                raise InvalidInput(
                    f"{split}: {len(missing)} index row(s) have no pose sample "
                    f"(first: {missing[0]!r}); run pipeline verify"
                )
    names = {split_name(s): [frame_dir(r["key"]) for r in rows_of[s]] for s in splits}
    return annotations, names


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
    check_output_file(out)
    ds = Dataset.open(url)
    splits = ds.select(split)
    annotations, split_keys = collect_annotations(ds, splits, show_progress=not quiet)
    buf = io.BytesIO()
    write_mmaction_pickle(buf, annotations, split_keys)
    write_output_file(out, buf.getvalue())
    counts = ", ".join(f"{s} {len(k)}" for s, k in split_keys.items())
    click.echo(
        f"wrote {out} ({human_bytes(len(buf.getvalue()))}): {len(annotations)} samples "
        f"({counts}), layout {ds.info.layout}, person axis: {ds.info.person_order}"
    )
