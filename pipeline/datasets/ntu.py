"""NTU RGB+D 60/120: ``SsssCcccPpppRrrrAaaa_rgb.avi``, labels from the action number.

Protocols (train/val):
- ``xsub``: cross-subject; the training performers below (the NTU-120 list restricted to
  performers 1-40 is exactly the NTU-60 list, so one list serves both);
- ``xview``: cross-view (NTU-60); cameras 2 and 3 train, camera 1 validates;
- ``xset``: cross-setup (NTU-120); even setup ids train.
"""

from __future__ import annotations

import re
from importlib import resources

from ..errors import InvalidInput
from . import AdapterOptions, ErrorRow, FilteredRow, Manifest, VideoItem, normalise_class_name
from .common import (
    NOT_IN_CLASSES,
    dedupe_keys,
    key_of,
    list_files,
    package_class_list,
    read_class_file,
)

NAME_RE = re.compile(r"^S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})(?:_rgb)?$")
XSUB_TRAIN_PERFORMERS = frozenset(
    (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38)
    # NTU-120 adds these.
    + (45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85)
    + (86, 89, 91, 92, 93, 94, 95, 97, 98, 100, 103)
)
XVIEW_TRAIN_CAMERAS = frozenset((2, 3))
PROTOCOLS = ("xsub", "xview", "xset")


def ntu_split(setup: int, camera: int, performer: int, protocol: str) -> str:
    if protocol == "xsub":
        return "train" if performer in XSUB_TRAIN_PERFORMERS else "val"
    if protocol == "xview":
        return "train" if camera in XVIEW_TRAIN_CAMERAS else "val"
    if protocol == "xset":
        return "train" if setup % 2 == 0 else "val"
    raise InvalidInput(f"unknown NTU protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")


def missing_skeleton_names() -> frozenset[str]:
    text = resources.files("pipeline").joinpath("data", "ntu_missing_skeletons.txt").read_text()
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


def load_ntu(options: AdapterOptions) -> Manifest:
    protocol = options.protocol or "xsub"
    if protocol not in PROTOCOLS:
        raise InvalidInput(
            f"unknown NTU protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}"
        )
    videos = list_files(options.videos, (".avi", ".mp4"))
    poses = list_files(options.poses, (".skeleton",)) if options.poses else {}
    missing_list = missing_skeleton_names()
    parsed = []
    unlisted = 0
    for stem, url in videos.items():
        m = NAME_RE.match(stem)
        if m is None:
            unlisted += 1  # not an NTU sample name
            continue
        setup, camera, performer, replication, action = (int(g) for g in m.groups())
        parsed.append((stem, url, setup, camera, performer, replication, action))

    actions = {p[6] for p in parsed}
    full = package_class_list("ntu120" if actions and max(actions) > 60 else "ntu60")
    if options.classes_file:
        classes = read_class_file(options.classes_file)
        by_name = {normalise_class_name(c): i for i, c in enumerate(classes)}
        action_to_label = {
            a: by_name[normalise_class_name(full[a - 1])]
            for a in range(1, len(full) + 1)
            if normalise_class_name(full[a - 1]) in by_name
        }
    else:
        classes = full
        action_to_label = {a: a - 1 for a in range(1, len(full) + 1)}

    errors: list[ErrorRow] = []
    items: list[VideoItem] = []
    filtered: list[FilteredRow] = []
    for stem, url, setup, camera, performer, replication, action in parsed:
        split = ntu_split(setup, camera, performer, protocol)
        if action < 1 or action > 120:
            reason = f"action number A{action:03d} out of range"
            errors.append(ErrorRow(url, "annotation", reason, split))
            continue
        label = action_to_label.get(action)
        if label is None:
            name = full[action - 1] if action <= len(full) else f"A{action:03d}"
            filtered.append(FilteredRow(url, key_of(url), split, name, NOT_IN_CLASSES))
            continue
        name = stem[: -len("_rgb")] if stem.endswith("_rgb") else stem
        extra = {
            "ntu_name": name,
            "setup": setup,
            "camera": camera,
            "performer": performer,
            "replication": replication,
            "action": action,
            "missing_skeleton": name in missing_list,
        }
        items.append(
            VideoItem(key_of(url), url, label, classes[label], split, poses.get(name), extra)
        )
    items = dedupe_keys(items, errors)
    return Manifest(
        dataset="ntu",
        classes=classes,
        items=items,
        errors=errors,
        listed=len(parsed),
        filtered_rows=filtered,
        missing=0,
        unlisted=unlisted,
        person_order="track",
        pose_layout="ntu25",
    )
