"""The rules `verify` applies to dataset.json, index rows and single samples (shard format v1).

Each check appends one line per problem to a :class:`Report` and never raises on bad data, so one
run lists every problem of a dataset.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..shards import DATASET_JSON, FORMAT_VERSION, POSE_MEMBERS, RASTER_MEMBERS, rgb_frame_members
from ..skeletons import Layout, get_layout

__all__ = [
    "Report",
    "Context",
    "names",
    "check_dataset_json",
    "check_index_rows",
    "check_pose_sample",
    "check_rgb_sample",
    "check_raster_sample",
]

MAX_LISTED = 3  # keys named in one problem line before "and N more"


@dataclass
class Report:
    """Problems found so far, and what was checked (for the summary line)."""

    problems: list[str] = field(default_factory=list)
    splits: int = 0
    shards: int = 0
    samples: int = 0

    def add(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")


def names(keys: list[str] | set[str]) -> str:
    keys = sorted(keys) if isinstance(keys, set) else keys
    shown = ", ".join(keys[:MAX_LISTED])
    return shown + (f" and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else "")


# ---------------------------------------------------------------------------------------------
# dataset.json


def check_dataset_json(raw: dict[str, Any], report: Report) -> Layout | None:
    """The layout when dataset.json is usable; problems otherwise."""
    where = DATASET_JSON
    if raw.get("format_version") != FORMAT_VERSION:
        report.add(where, f"format_version {raw.get('format_version')!r}, expected 1")
        return None
    try:
        layout = get_layout(raw.get("layout", ""))
    except ValueError as exc:
        report.add(where, str(exc))
        return None
    if raw.get("joint_names") != list(layout.names):
        report.add(where, f"joint_names differ from layout {layout.name}")
    if raw.get("bones") != layout.bones.tolist():
        report.add(where, f"bones differ from layout {layout.name} (the PAF channel order)")
    if raw.get("raster_channels", layout.num_channels) != layout.num_channels:
        report.add(where, f"raster_channels {raw['raster_channels']} != {layout.num_channels}")
    classes = raw.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        report.add(where, "classes must be a non-empty list of names")
    elif len(set(classes)) != len(classes):
        report.add(where, "classes has duplicate names")
    stride = raw.get("frame_stride")
    if not isinstance(stride, int) or stride < 1:
        report.add(where, f"frame_stride {stride!r} is not a positive integer")
    if raw.get("person_order") not in ("track", "score"):
        report.add(where, f"person_order {raw.get('person_order')!r} is not track or score")
    return layout


# ---------------------------------------------------------------------------------------------
# Index rows


def check_index_rows(
    rows: list[dict[str, Any]], classes: list[str], max_persons: int, where: str, report: Report
) -> None:
    counts = Counter(r["key"] for r in rows)
    dups = [k for k, n in counts.items() if n > 1]
    if dups:
        report.add(where, f"{len(dups)} key(s) appear more than once: {names(dups)}")
    for r in rows:
        key = r["key"]
        bad = []
        if not key or "." in key or "/" in key:
            bad.append("key is empty or holds '.' or '/'")
        label = r["label"]
        if label is None or not 0 <= label < len(classes):
            bad.append(f"label {label} outside 0..{len(classes) - 1}")
        elif r["label_name"] != classes[label]:
            bad.append(f"label_name {r['label_name']!r} != classes[{label}] {classes[label]!r}")
        h, w = r["height"], r["width"]
        if not (h and w and h > 0 and w > 0 and h % 4 == 0 and w % 4 == 0):
            bad.append(f"frame size {h}x{w} is not positive multiples of 4")
        if not r["num_frames"] or r["num_frames"] < 1:
            bad.append(f"num_frames {r['num_frames']}")
        pf = r["person_fraction"]
        if pf is None or not 0.0 <= pf <= 1.0:
            bad.append(f"person_fraction {pf}")
        if r["num_persons"] is None or not 0 <= r["num_persons"] <= max_persons:
            bad.append(f"num_persons {r['num_persons']} outside 0..{max_persons}")
        if r["shard"] is None or r["shard"] < 0:
            bad.append(f"shard {r['shard']}")
        for b in bad:
            report.add(f"{where} row {key}", b)


# ---------------------------------------------------------------------------------------------
# Samples


@dataclass
class Context:
    """What a sample is checked against."""

    layout: Layout
    stride: int
    max_persons: int
    deep: bool
    split_url: str
    index: dict[str, dict[str, Any]]  # key -> index row (first one)


def _load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def check_pose_sample(
    key: str, group: dict[str, bytes], ctx: Context, where: str, report: Report
) -> np.ndarray | None:
    """Problems of one pose sample; returns its frame indices when they are usable."""
    here = f"{where}: {key}"
    if set(group) != POSE_MEMBERS:
        missing, extra = POSE_MEMBERS - set(group), set(group) - POSE_MEMBERS
        report.add(here, f"members missing {sorted(missing)}, unexpected {sorted(extra)}")
        if missing:
            return None
    row = ctx.index.get(key)
    try:
        kp, frames = _load_npy(group["keypoints.npy"]), _load_npy(group["frames.npy"])
        meta = json.loads(group["json"])
    except Exception as exc:  # a damaged member: numpy and json raise several types
        report.add(here, f"unreadable pose member ({type(exc).__name__}: {exc})")
        return None
    k = ctx.layout.num_joints
    if kp.dtype != np.float32:
        report.add(here, f"keypoints dtype {kp.dtype}, expected float32")
    if kp.ndim != 4 or kp.shape[2:] != (k, 3):
        report.add(here, f"keypoints shape {list(kp.shape)}, expected [F, P, {k}, 3]")
        return None
    f, p = kp.shape[:2]
    if p > ctx.max_persons:
        report.add(here, f"{p} persons, at most {ctx.max_persons}")
    if not np.isfinite(kp).all():
        report.add(here, "keypoints hold NaN or infinity")
    ok_frames = True
    if frames.dtype != np.int32 or frames.shape != (f,):
        report.add(here, f"frames.npy {frames.dtype} {list(frames.shape)}, expected int32 [{f}]")
        ok_frames = frames.ndim == 1 and frames.dtype.kind == "i"
    if ok_frames and len(frames):
        if (np.diff(frames) <= 0).any():
            report.add(here, "frame indices not strictly increasing")
        if (frames % ctx.stride).any() or frames[0] < 0:
            report.add(here, f"frame indices not non-negative multiples of stride {ctx.stride}")
    if f == 0:
        report.add(here, "no frames")
    if not isinstance(meta, dict):
        report.add(here, "json member is not an object")
        meta = {}
    if meta.get("key", key) != key:
        report.add(here, f"json key {meta['key']!r}")
    if meta.get("layout", ctx.layout.name) != ctx.layout.name:
        report.add(here, f"json layout {meta['layout']!r}, dataset has {ctx.layout.name}")
    if row is not None:
        if f != row["num_frames"]:
            report.add(here, f"{f} frames, index says {row['num_frames']}")
        if p != row["num_persons"]:
            report.add(here, f"{p} persons, index says {row['num_persons']}")
        if (
            ok_frames
            and len(frames)
            and row["source_frames"]
            and frames[-1] >= row["source_frames"]
        ):
            report.add(here, f"frame {frames[-1]} beyond source_frames {row['source_frames']}")
        for name in ("label", "height", "width"):
            if name in meta and meta[name] != row[name]:
                report.add(here, f"json {name} {meta[name]!r}, index says {row[name]!r}")
        if "label" not in meta:
            report.add(here, "json has no label")
    return frames if ok_frames else None


def check_rgb_sample(
    key: str,
    group: dict[str, bytes],
    frames: np.ndarray | None,
    ctx: Context,
    where: str,
    report: Report,
) -> None:
    import simplejpeg

    here = f"{where}: {key}"
    members = rgb_frame_members(group)
    if len(members) != len(group):
        report.add(here, f"members other than NNNNNN.jpg: {names(sorted(group))}")
    if frames is not None:
        want = {f"{int(i):06d}.jpg" for i in frames}
        have = {ext for _, ext in members}
        if want != have:
            missing, extra = sorted(want - have), sorted(have - want)
            parts = [f"missing {names(missing)}"] if missing else []
            parts += [f"not among the kept frames {names(extra)}"] if extra else []
            report.add(here, "jpeg frames " + "; ".join(parts))
    row = ctx.index.get(key)
    todo = members if ctx.deep else members[:1]
    for index, ext in todo:
        try:
            image = simplejpeg.decode_jpeg(group[ext], colorspace="RGB")
        except Exception as exc:  # simplejpeg raises ValueError or its own errors
            report.add(here, f"frame {index:06d} does not decode ({exc})")
            continue
        if row is not None and image.shape != (row["height"], row["width"], 3):
            report.add(
                here,
                f"frame {index:06d} is {list(image.shape)}, "
                f"index says [{row['height']}, {row['width']}, 3]",
            )
            break  # one line per sample is enough


def _npz_arrays(data: bytes, deep: bool) -> dict[str, tuple[np.dtype, tuple[int, ...], Any]]:
    """name -> (dtype, shape, array or None): headers only unless ``deep``."""
    out = {}
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            name = info.filename.removesuffix(".npy")
            with zf.open(info) as f:
                if deep:
                    arr = np.load(io.BytesIO(f.read()), allow_pickle=False)
                    out[name] = (arr.dtype, arr.shape, arr)
                    continue
                version = np.lib.format.read_magic(f)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(f)
                out[name] = (dtype, shape, None)
    return out


def check_raster_sample(
    key: str,
    group: dict[str, bytes],
    frames: np.ndarray | None,
    ctx: Context,
    where: str,
    report: Report,
) -> None:
    here = f"{where}: {key}"
    if set(group) != RASTER_MEMBERS:
        report.add(here, f"members {sorted(group)}, expected ['raster.npz']")
        if "raster.npz" not in group:
            return
    try:
        arrays = _npz_arrays(group["raster.npz"], ctx.deep)
    except Exception as exc:  # zipfile, zlib and numpy raise several types
        report.add(here, f"unreadable raster.npz ({type(exc).__name__}: {exc})")
        return
    row = ctx.index.get(key)
    f = len(frames) if frames is not None else (row["num_frames"] if row else None)
    hw = (row["height"] // 4, row["width"] // 4) if row else None
    lay = ctx.layout
    for name, dtype, channels in (
        ("heatmaps", np.uint8, lay.num_joints),
        ("pafs", np.int8, 2 * lay.num_bones),
    ):
        if name not in arrays:
            report.add(here, f"raster.npz has no {name}")
            continue
        got_dtype, shape, arr = arrays[name]
        if got_dtype != dtype:
            report.add(here, f"{name} dtype {got_dtype}, expected {np.dtype(dtype)}")
        want = [f, channels, *(hw or (None, None))]
        if len(shape) != 4 or any(
            w is not None and s != w for s, w in zip(shape, want, strict=True)
        ):
            shown = ", ".join("?" if w is None else str(w) for w in want)
            report.add(here, f"{name} shape {list(shape)}, expected [{shown}]")
        if arr is not None and name == "pafs" and arr.dtype == np.int8 and (arr == -128).any():
            report.add(here, "pafs hold -128 (quantisation range is -127..127)")
