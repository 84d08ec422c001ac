"""Choosing which persons a sample keeps (top 5) and how its person axis is ordered, and which
pose-model detections are plausible persons at all.

Tracked sources (mediapipe's tracker, NTU body ids) keep the person axis along tracks, so that
skeleton models see one body per slot; untracked sources order each frame by score.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

__all__ = [
    "PersonRules",
    "drop_implausible",
    "mean_scores",
    "pack_tracks",
    "persons_per_frame",
    "plausible_persons",
    "select_by_score",
    "select_persons",
]


def mean_scores(keypoints: np.ndarray) -> np.ndarray:
    """Mean keypoint score of each person in each frame, [F, P]; non-finite scores count as 0."""
    scores = np.nan_to_num(keypoints[..., 2], nan=0.0, posinf=0.0, neginf=0.0)
    return scores.mean(axis=-1) if keypoints.shape[-2] else np.zeros(keypoints.shape[:2])


def persons_per_frame(keypoints: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """Persons with at least one keypoint at or above ``threshold``, per frame [F]."""
    scores = np.nan_to_num(keypoints[..., 2], nan=0.0)
    return (scores >= threshold).any(axis=-1).sum(axis=-1)


def select_by_score(keypoints: np.ndarray, max_persons: int, threshold: float = 0.1) -> np.ndarray:
    """Per frame, persons sorted by mean score; P = min(max_persons, most persons in a frame)."""
    f = keypoints.shape[0]
    p_out = int(min(max_persons, persons_per_frame(keypoints, threshold).max(initial=0)))
    order = np.argsort(-mean_scores(keypoints), axis=1, kind="stable")[:, :p_out]
    out = np.take_along_axis(keypoints, order[:, :, None, None], axis=1)
    present = (np.nan_to_num(out[..., 2]) >= threshold).any(axis=-1)
    out[~present] = 0.0
    return np.ascontiguousarray(out.reshape(f, p_out, *keypoints.shape[2:]), dtype=np.float32)


def pack_tracks(keypoints: np.ndarray, max_persons: int, threshold: float = 0.1) -> np.ndarray:
    """Keep tracks (the person axis) whole: the best-scoring tracks, packed into few slots.

    Tracks are taken in order of total score and put into the first slot that is free on every
    frame where the track is present, so two tracks that never overlap in time may share a slot.
    The output has P = min(max_persons, most persons in a frame) slots; tracks that fit in none
    are dropped.
    """
    f = keypoints.shape[0]
    present = (np.nan_to_num(keypoints[..., 2]) >= threshold).any(axis=-1)  # [F, P]
    p_out = int(min(max_persons, present.sum(axis=1).max(initial=0)))
    out = np.zeros((f, p_out, *keypoints.shape[2:]), dtype=np.float32)
    occupied = np.zeros((f, p_out), dtype=bool)
    totals = mean_scores(keypoints).sum(axis=0)
    for track in np.argsort(-totals, kind="stable"):
        frames = present[:, track]
        if not frames.any():
            continue
        for slot in range(p_out):
            if not (occupied[frames, slot]).any():
                out[frames, slot] = keypoints[frames, track]
                occupied[frames, slot] = True
                break
    return out


def select_persons(
    keypoints: np.ndarray, max_persons: int = 5, tracked: bool = False, threshold: float = 0.1
) -> np.ndarray:
    keypoints = np.asarray(keypoints, dtype=np.float32)
    if keypoints.ndim != 4 or keypoints.shape[-1] != 3:
        raise ValueError(f"keypoints must be [F, P, K, 3], got {keypoints.shape}")
    if tracked:
        return pack_tracks(keypoints, max_persons, threshold)
    return select_by_score(keypoints, max_persons, threshold)


# --------------------------------------------------------------------------- plausible persons


@dataclass(frozen=True)
class PersonRules:
    """When a pose model's detection counts as a person (docs/pose.md, "Plausible persons").

    A joint is *confident* when its score is at least ``min_score`` and it lies inside the
    frame (pixel centres at integers: -0.5 <= x < W - 0.5). A detection is kept when it has
    at least ``min_body_joints`` confident body joints (shoulders, elbows, wrists, hips, knees,
    ankles), at least ``min_limb_joints`` of them below the shoulders (a head, even with its
    shoulders, is not a body pose), and the box of its confident joints has a longer side of at
    least ``min_box_fraction`` of the frame's short side. ``filter_persons=False`` keeps everything.
    The defaults and their reasons are in docs/pose.md; they were fixed before being measured
    on the real clips.
    """

    filter_persons: bool = True
    # mediapipe's own drawing utilities hide landmarks below visibility 0.5.
    min_score: float = 0.5
    # A third of the 12 body joints: e.g. both shoulders and one arm.
    min_body_joints: int = 4
    # Head-only detections: face joints and shoulders alone never make a person.
    min_limb_joints: int = 2
    # 1/8 of the short side: 32 px in a 256-px frame (COCO leaves persons under 32x32 px out
    # of keypoint evaluation) and 8 px at the raster's 64 (7 px at the paper's 56-px pose
    # input), where 17 joints and their bones merge into one blob.
    min_box_fraction: float = 0.125

    def __post_init__(self) -> None:
        # Values often come from the command line (--pose-option), so check their types too.
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "bool":
                ok = isinstance(value, bool)
            elif f.type == "int":
                ok = isinstance(value, int) and not isinstance(value, bool)
            else:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok:
                kind = {"bool": "true or false", "int": "a whole number"}.get(f.type, "a number")
                raise ValueError(f"person rule {f.name} must be {kind}; got {value!r}")
            if f.type == "float":
                object.__setattr__(self, f.name, float(value))  # 1 and 1.0: one fingerprint
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1]; got {self.min_score}")
        if self.min_body_joints < 0 or self.min_limb_joints < 0:
            raise ValueError("min_body_joints and min_limb_joints must be >= 0")
        if not 0.0 <= self.min_box_fraction <= 1.0:
            raise ValueError(f"min_box_fraction must be in [0, 1]; got {self.min_box_fraction}")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> tuple[PersonRules, dict[str, Any]]:
        """Split backend options: the rule fields (e.g. from ``--pose-option min_score=0.3``)
        make the rules, the rest is returned unchanged."""
        names = set(cls.field_names())
        rules = cls(**{k: v for k, v in options.items() if k in names})
        return rules, {k: v for k, v in options.items() if k not in names}


def _joint_groups(layout: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (body joints, limb joints) of a layout, found by joint name."""
    from .skeletons import get_layout

    names = [n.lower() for n in get_layout(layout).names]
    limb = [i for i, n in enumerate(names) if any(p in n for p in _LIMB_PARTS)]
    body = [i for i, n in enumerate(names) if "shoulder" in n] + limb
    if len(limb) < 10:
        raise ValueError(f"person rules need a layout with named limb joints; got {layout!r}")
    return np.array(sorted(body)), np.array(limb)


_LIMB_PARTS = ("elbow", "wrist", "hip", "knee", "ankle")


def plausible_persons(
    poses: np.ndarray,
    frame_hw: tuple[int, int],
    rules: PersonRules = PersonRules(),
    layout: str = "coco17",
) -> np.ndarray:
    """Which poses [..., K, 3] (pixels of a frame of size ``frame_hw``) pass ``rules``; bool [...].

    Absent persons (all zeros) never pass.
    """
    poses = np.asarray(poses, dtype=np.float32)
    lead = poses.shape[:-2]
    if not rules.filter_persons:
        return (poses != 0).any(axis=(-1, -2))
    body, limb = _joint_groups(layout)
    height, width = frame_hw
    x, y, score = (np.nan_to_num(poses[..., i], nan=-1.0) for i in range(3))
    confident = (score >= rules.min_score) & (score > 0)
    confident &= (x >= -0.5) & (x < width - 0.5) & (y >= -0.5) & (y < height - 0.5)
    ok = confident[..., body].sum(axis=-1) >= rules.min_body_joints
    ok &= confident[..., limb].sum(axis=-1) >= rules.min_limb_joints
    ok &= confident.any(axis=-1)
    big = np.inf
    x0 = np.where(confident, x, big).min(axis=-1, initial=big)
    x1 = np.where(confident, x, -big).max(axis=-1, initial=-big)
    y0 = np.where(confident, y, big).min(axis=-1, initial=big)
    y1 = np.where(confident, y, -big).max(axis=-1, initial=-big)
    with np.errstate(invalid="ignore"):
        side = np.maximum(x1 - x0, y1 - y0)
    ok &= np.nan_to_num(side, nan=0.0, posinf=0.0, neginf=0.0) >= (
        rules.min_box_fraction * min(height, width)
    )
    return ok.reshape(lead)


def drop_implausible(
    keypoints: np.ndarray,
    frame_hw: tuple[int, int],
    rules: PersonRules = PersonRules(),
    layout: str = "coco17",
) -> np.ndarray:
    """A copy of ``keypoints`` [..., P, K, 3] with the persons that fail ``rules`` zeroed."""
    out = np.array(keypoints, dtype=np.float32, copy=True)
    out[~plausible_persons(out, frame_hw, rules, layout)] = 0.0
    return out
