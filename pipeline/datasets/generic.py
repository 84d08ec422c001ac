"""Any folder of videos: a CSV ``path,label[,split]`` (header optional).

Relative paths are resolved against ``--videos`` (or the CSV's folder when ``--videos`` is not
given); split defaults to ``train``.
"""

from __future__ import annotations

import csv
import io
import os
import posixpath

from .. import storage
from ..errors import InvalidInput
from . import AdapterOptions, ErrorRow, FilteredRow, Manifest, VideoItem, normalise_class_name
from .common import (
    NOT_IN_CLASSES,
    VIDEO_EXTENSIONS,
    class_index,
    dedupe_keys,
    key_of,
    list_files,
    read_class_file,
    read_text,
)


def _resolve(base: str, path: str) -> str:
    if storage.is_remote(path):
        return path
    if storage.is_remote(base):
        return storage.join(base, path)
    return os.path.abspath(os.path.join(storage.strip_protocol(base), path))


def load_generic(options: AdapterOptions) -> Manifest:
    if not options.annotations:
        raise InvalidInput("--dataset generic needs --annotations (a CSV path,label[,split])")
    text = read_text(options.annotations)
    rows = list(csv.reader(io.StringIO(text)))
    start = 1 if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"] else 0
    base = options.videos or posixpath.dirname(str(options.annotations)) or "."
    errors: list[ErrorRow] = []
    parsed: list[tuple[str, str, str]] = []
    for line, row in enumerate(rows[start:], start=start + 1):
        if not row or all(not c.strip() for c in row):
            continue
        where = f"{options.annotations}:{line}"
        split = row[2].strip() if len(row) > 2 and row[2].strip() else "train"
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            errors.append(ErrorRow(where, "annotation", "expected path,label[,split]", split))
            continue
        parsed.append((_resolve(base, row[0].strip()), row[1].strip(), split))
    listed = len(parsed) + len(errors)

    if options.classes_file:
        classes = read_class_file(options.classes_file)
    else:
        originals = {normalise_class_name(label): label for _, label, _ in parsed}
        classes = [originals[k] for k in sorted(originals)]
    index = class_index(classes)
    poses = {}
    if options.poses and storage.isdir(options.poses):
        poses = list_files(options.poses, (".json", ".skeleton"))
    elif options.poses:
        poses = {"*": options.poses}  # one file for all videos (an mmaction/pyskl pickle)

    items: list[VideoItem] = []
    filtered: list[FilteredRow] = []
    missing = 0
    for source, label, split in parsed:
        label_index = index.get(normalise_class_name(label))
        if label_index is None:
            filtered.append(FilteredRow(source, key_of(source), split, label, NOT_IN_CLASSES))
            continue
        if not storage.exists(source):
            missing += 1
            errors.append(ErrorRow(source, "find", "video file not found", split))
            continue
        key = key_of(source)
        pose_url = poses.get(key) or poses.get("*")
        items.append(VideoItem(key, source, label_index, classes[label_index], split, pose_url))
    items = dedupe_keys(items, errors)

    unlisted = 0
    if options.videos and storage.isdir(options.videos):
        # Every file an annotation row names is listed, whether its row was built or filtered.
        used = {storage.strip_protocol(source) for source, _, _ in parsed}
        present = list_files(options.videos, VIDEO_EXTENSIONS).values()
        unlisted = sum(1 for p in present if storage.strip_protocol(p) not in used)
    return Manifest(
        dataset="generic",
        classes=classes,
        items=items,
        errors=errors,
        listed=listed,
        filtered_rows=filtered,
        missing=missing,
        unlisted=unlisted,
    )
