"""Choosing which persons a sample keeps (top 5) and how its person axis is ordered.

Tracked sources (mediapipe's tracker, NTU body ids) keep the person axis along tracks, so that
skeleton models see one body per slot; untracked sources order each frame by score.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mean_scores", "persons_per_frame", "select_by_score", "pack_tracks", "select_persons"]


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
