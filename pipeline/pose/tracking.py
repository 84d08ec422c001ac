"""A small greedy pose tracker: links per-frame poses into tracks within one video.

mediapipe's Tasks API returns the poses of a frame in no stable order, so without tracking the
person axis of stored keypoints would jump between people from frame to frame (skeleton models
need it to follow a person). Matching is greedy on the mean distance between joints that both
poses see, normalised by the track's size; with at most 5 people per frame greedy and Hungarian
assignment agree in practice, and greedy needs no scipy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["PoseTracker", "Track", "pose_box", "pose_distance", "track_poses"]

# Below this size (pixels) a pose's box is treated as this size, so that a collapsed pose (all
# joints on one point) does not make every distance to it infinite.
_MIN_SCALE = 8.0


def pose_box(pose: np.ndarray, score_threshold: float = 0.3) -> np.ndarray:
    """Bounding box (x0, y0, x1, y1) of the joints scoring above ``score_threshold``.

    Falls back to all joints when none passes, so every pose has a box.
    """
    keep = pose[:, 2] > score_threshold
    pts = pose[keep, :2] if keep.any() else pose[:, :2]
    return np.concatenate([pts.min(axis=0), pts.max(axis=0)]).astype(np.float32)


def pose_distance(ref: np.ndarray, other: np.ndarray, score_threshold: float = 0.3) -> float:
    """Mean distance between the joints of two poses [K, 3], in units of ``ref``'s size.

    Uses the joints both poses see (score above the threshold), else all joints. The size is
    the square root of ``ref``'s box area (at least a few pixels).
    """
    both = (ref[:, 2] > score_threshold) & (other[:, 2] > score_threshold)
    if not both.any():
        both = np.ones(len(ref), dtype=bool)
    dist = np.linalg.norm(ref[both, :2] - other[both, :2], axis=1).mean()
    x0, y0, x1, y1 = pose_box(ref, score_threshold)
    scale = max(float(np.sqrt(max(x1 - x0, 0.0) * max(y1 - y0, 0.0))), _MIN_SCALE)
    return float(dist / scale)


@dataclass
class Track:
    """One person through a video: their pose in each frame where they were matched."""

    track_id: int
    first: int
    last: int
    poses: dict[int, np.ndarray] = field(default_factory=dict)
    score: float = 0.0  # sum over frames of the pose's mean keypoint score
    missed: int = 0

    def add(self, frame: int, pose: np.ndarray) -> None:
        self.poses[frame] = pose
        self.last = frame
        self.score += float(pose[:, 2].mean())
        self.missed = 0

    @property
    def last_pose(self) -> np.ndarray:
        return self.poses[self.last]


class PoseTracker:
    """Greedy frame-to-frame assignment of poses to tracks.

    ``max_missed``: frames (of those given) a track survives unmatched before it ends.
    ``max_distance``: largest :func:`pose_distance` that still continues a track.
    ``duplicate_distance``: two poses of one frame closer than this are one person seen twice;
    the lower-scoring one is dropped.
    """

    def __init__(
        self,
        max_missed: int = 5,
        max_distance: float = 0.5,
        score_threshold: float = 0.3,
        duplicate_distance: float = 0.1,
    ) -> None:
        self.max_missed = max_missed
        self.max_distance = max_distance
        self.score_threshold = score_threshold
        self.duplicate_distance = duplicate_distance
        self.reset()

    def reset(self) -> None:
        self.tracks: list[Track] = []
        self._active: list[Track] = []
        self._frame = -1
        self.max_per_frame = 0

    def _deduplicate(self, poses: np.ndarray) -> np.ndarray:
        if len(poses) < 2:
            return poses
        order = np.argsort(-poses[:, :, 2].mean(axis=1), kind="stable")
        kept: list[int] = []
        for i in order:
            if all(
                pose_distance(poses[k], poses[i], self.score_threshold) >= self.duplicate_distance
                for k in kept
            ):
                kept.append(int(i))
        return poses[sorted(kept)]

    def update(self, poses: np.ndarray) -> list[int]:
        """Add the poses [n, K, 3] of the next frame; return the track id of each kept pose."""
        self._frame += 1
        frame = self._frame
        poses = self._deduplicate(np.asarray(poses, dtype=np.float32))
        self.max_per_frame = max(self.max_per_frame, len(poses))
        pairs = [
            (pose_distance(t.last_pose, p, self.score_threshold), ti, pi)
            for ti, t in enumerate(self._active)
            for pi, p in enumerate(poses)
        ]
        # Cheapest pair first; ties broken by track then pose index, so results are
        # deterministic.
        pairs.sort()
        used_t: set[int] = set()
        assigned: dict[int, int] = {}
        for cost, ti, pi in pairs:
            if cost > self.max_distance:
                break
            if ti in used_t or pi in assigned:
                continue
            used_t.add(ti)
            assigned[pi] = ti
            self._active[ti].add(frame, poses[pi])
        ids = []
        for pi, pose in enumerate(poses):
            if pi in assigned:
                ids.append(self._active[assigned[pi]].track_id)
                continue
            track = Track(track_id=len(self.tracks), first=frame, last=frame)
            track.add(frame, pose)
            self.tracks.append(track)
            self._active.append(track)
            used_t.add(len(self._active) - 1)
            ids.append(track.track_id)
        for ti, track in enumerate(self._active):
            if ti not in used_t:
                track.missed += 1
        self._active = [t for t in self._active if t.missed <= self.max_missed]
        return ids

    def result(
        self,
        num_joints: int,
        max_persons: int = 5,
        num_frames: int | None = None,
        reuse_slots: bool = True,
    ) -> np.ndarray:
        """Keypoints [F, P, K, 3] whose person axis follows the tracks.

        P = min(max_persons, most persons in any frame). Tracks are taken by total score; with
        ``reuse_slots`` a track that starts after another has ended may take that track's slot
        (a slot then holds one track at a time), so fewer detections are lost when a person is
        re-acquired under a new track. Slots are ordered by the total score they hold.
        """
        num_frames = self._frame + 1 if num_frames is None else num_frames
        num_slots = min(max_persons, self.max_per_frame)
        out = np.zeros((num_frames, num_slots, num_joints, 3), dtype=np.float32)
        if num_slots == 0:
            return out
        # Highest total score first; ties by id (creation order) for determinism.
        ranked = sorted(self.tracks, key=lambda t: (-t.score, t.track_id))
        slots: list[list[Track]] = []
        for track in ranked:
            for slot in slots:
                if reuse_slots and all(t.last < track.first or t.first > track.last for t in slot):
                    slot.append(track)
                    break
            else:
                if len(slots) < num_slots:
                    slots.append([track])
        slot_score = [sum(t.score for t in slot) for slot in slots]
        order = sorted(range(len(slots)), key=lambda s: (-slot_score[s], s))
        for p, s in enumerate(order):
            for track in slots[s]:
                for frame, pose in track.poses.items():
                    out[frame, p] = pose
        return out


def track_poses(
    per_frame: Sequence[np.ndarray],
    num_joints: int,
    max_persons: int = 5,
    reuse_slots: bool = True,
    **tracker_options: float,
) -> np.ndarray:
    """Track the per-frame poses [n_i, K, 3] of one video; return [F, P, K, 3] (see
    :meth:`PoseTracker.result`)."""
    tracker = PoseTracker(**tracker_options)
    for poses in per_frame:
        tracker.update(np.asarray(poses, dtype=np.float32).reshape(-1, num_joints, 3))
    return tracker.result(num_joints, max_persons, len(per_frame), reuse_slots)
