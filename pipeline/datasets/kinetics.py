"""Kinetics and Mimetics: the official CSV shape ``label,youtube_id,time_start,time_end,split``.

Videos are already-trimmed clips named ``<youtube_id>_<start:06d>_<end:06d>.<ext>`` (the CSV
times only name the file), in one folder or per-class folders; a file named ``<youtube_id>.<ext>``
is accepted too. YouTube ids may contain ``_`` and begin with ``-``.
"""

from __future__ import annotations

import os

from ..errors import InvalidInput
from . import AdapterOptions, ErrorRow, FilteredRow, Manifest, VideoItem, normalise_class_name
from .common import (
    NOT_IN_CLASSES,
    VIDEO_EXTENSIONS,
    annotation_files,
    class_index,
    dedupe_keys,
    key_of,
    list_files,
    package_class_list,
    read_class_file,
    read_csv_rows,
)

_SPLIT_ALIASES = {"validate": "val", "validation": "val", "training": "train", "testing": "test"}


def _split_from_filename(url: str, default: str) -> str:
    name = os.path.basename(url).lower()
    for token in ("train", "validate", "validation", "val", "test"):
        if token in name:
            return _SPLIT_ALIASES.get(token, token)
    return default


KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")


def _int_time(value: str) -> int:
    number = float(value)
    if not number.is_integer():
        raise InvalidInput(f"time {value!r} is not a whole number of seconds")
    return int(number)


def _load(options: AdapterOptions, dataset: str, default_split: str) -> Manifest:
    if not options.annotations:
        raise InvalidInput(f"--dataset {dataset} needs --annotations (the CSV)")
    videos = list_files(options.videos, VIDEO_EXTENSIONS)
    poses = list_files(options.poses, (".json",)) if options.poses else {}
    errors: list[ErrorRow] = []
    parsed: list[tuple[str, str, str, str]] = []  # label, youtube_id, stem, split
    listed = 0
    for csv_url in annotation_files(options.annotations):
        file_split = _split_from_filename(csv_url, default_split)
        rows = read_csv_rows(csv_url)
        lacking = [c for c in KINETICS_COLUMNS if rows and c not in rows[0][1]]
        if lacking:  # the header itself: not a Kinetics CSV, not a bad row
            raise InvalidInput(
                f"{csv_url}: no {', '.join(lacking)} column; a Kinetics CSV's header is "
                f"{','.join(KINETICS_COLUMNS)}[,split]"
            )
        for line, row in rows:
            listed += 1
            where = f"{csv_url}:{line}"
            split = (row.get("split") or "").strip().lower() or file_split
            split = default_split if dataset == "mimetics" else _SPLIT_ALIASES.get(split, split)
            label = (row.get("label") or "").strip()
            youtube_id = (row.get("youtube_id") or "").strip()
            if not label or not youtube_id:
                errors.append(
                    ErrorRow(where, "annotation", "row without label or youtube_id", split)
                )
                continue
            try:
                # A short row leaves its last fields None.
                start, end = (
                    _int_time(row["time_start"] or ""),
                    _int_time(row["time_end"] or ""),
                )
            except (TypeError, ValueError) as exc:
                errors.append(
                    ErrorRow(where, "annotation", f"bad time_start/time_end: {exc}", split)
                )
                continue
            parsed.append((label, youtube_id, f"{youtube_id}_{start:06d}_{end:06d}", split))

    if options.classes_file:
        classes = read_class_file(options.classes_file)
    else:
        labels = sorted({normalise_class_name(p[0]) for p in parsed})
        kinetics400 = package_class_list("kinetics400")
        known = class_index(kinetics400)
        if dataset == "kinetics" and labels and all(label in known for label in labels):
            classes = kinetics400
        else:
            # Unknown label set: sorted names, as the contract says.
            originals = {normalise_class_name(p[0]): p[0] for p in parsed}
            classes = [originals[label] for label in labels]
    index = class_index(classes)

    items: list[VideoItem] = []
    used: set[str] = set()
    filtered: list[FilteredRow] = []
    missing = 0
    for label, youtube_id, stem, split in parsed:
        label_index = index.get(normalise_class_name(label))
        source = videos.get(stem) or videos.get(youtube_id)
        if source is not None:
            used.add(stem if stem in videos else youtube_id)
        if label_index is None:
            key = key_of(source) if source is not None else stem
            filtered.append(FilteredRow(source or stem, key, split, label, NOT_IN_CLASSES))
            continue
        if source is None:
            missing += 1
            errors.append(
                ErrorRow(stem, "find", "video file not found under --videos", split, stem)
            )
            continue
        key = key_of(source)
        pose_url = poses.get(key) or poses.get(os.path.splitext(os.path.basename(source))[0])
        pose_url = pose_url or poses.get(youtube_id)
        extra = {"youtube_id": youtube_id}
        items.append(
            VideoItem(key, source, label_index, classes[label_index], split, pose_url, extra)
        )
    items = dedupe_keys(items, errors)
    return Manifest(
        dataset=dataset,
        classes=classes,
        items=items,
        errors=errors,
        listed=listed,
        filtered_rows=filtered,
        missing=missing,
        unlisted=len(set(videos) - used),
        person_order="score",
        pose_layout="openpose18",
    )


def load_kinetics(options: AdapterOptions) -> Manifest:
    return _load(options, "kinetics", "train")


def load_mimetics(options: AdapterOptions) -> Manifest:
    """Mimetics: the Kinetics CSV shape, test split only, classes matched by name.

    Pass the model's class list (e.g. the 50 Kinetics classes) as ``--classes`` so that label
    indices agree with the Kinetics50 model that will be evaluated on it.
    """
    return _load(options, "mimetics", "test")
