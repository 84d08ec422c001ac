"""Precomputed poses: kinetics-skeleton JSON, NTU ``.skeleton`` and mmaction/pyskl pickles.

Poses are aligned to the kept frames of a video and mapped to stored-frame pixels with the
pixel-centre convention x_stored = (x_source + 0.5) * stored_w / source_w - 0.5.

Time alignment of kinetics-skeleton files (``--poses-fps``):
- ``auto``: index-aligned when the file's last ``frame_index`` is within 2 of the video's frame
  count, else time-aligned at 30 fps (ST-GCN's release was made from videos resampled to 30 fps);
- ``native``: index-aligned (file frame i + 1 is source frame i);
- a number N: time-aligned at N fps (source frame i at time i / fps is file frame
  round(i / fps * N) + 1).
NTU skeletons and pickles are index-aligned (they were made from the same frames). NTU
colour coordinates are pixels of the 1920x1080 colour frame.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

from .. import storage

__all__ = ["load_precomputed", "align_frames", "rescale_keypoints", "guess_layout", "AUTO_FPS"]

NTU_COLOR_HW = (1080, 1920)  # Kinect v2 colour frame of NTU RGB+D
AUTO_FPS = 30.0  # ST-GCN's Kinetics skeletons were made from 30 fps videos


def rescale_keypoints(
    keypoints: np.ndarray, source_hw: tuple[int, int], target_hw: tuple[int, int]
) -> np.ndarray:
    """Map pixel coordinates between two sizes of the same frame (pixel centres at integers)."""
    out = np.array(keypoints, dtype=np.float32, copy=True)
    sy = target_hw[0] / source_hw[0]
    sx = target_hw[1] / source_hw[1]
    out[..., 0] = (out[..., 0] + 0.5) * sx - 0.5
    out[..., 1] = (out[..., 1] + 0.5) * sy - 0.5
    out[out[..., 2] <= 0] = 0.0  # absent joints stay exactly zero
    return out


def align_frames(
    file_frame_index: np.ndarray,
    keypoints: np.ndarray,
    kept_indices: np.ndarray,
    source_frames: int,
    fps: float,
    poses_fps: str | float = "auto",
) -> np.ndarray:
    """Keypoints [F_kept, P, K, 3] for the kept source frames from a file's 1-based frames.

    Frames the file does not have give zeros (no person), never an error.
    """
    kept = np.asarray(kept_indices, dtype=np.int64)
    p, k = keypoints.shape[1], keypoints.shape[2]
    out = np.zeros((len(kept), p, k, 3), dtype=np.float32)
    if len(file_frame_index) == 0:
        return out
    last = int(np.max(file_frame_index))
    if poses_fps == "native" or (poses_fps == "auto" and abs(last - source_frames) <= 2):
        wanted = kept + 1
    else:
        rate = AUTO_FPS if poses_fps == "auto" else float(poses_fps)
        video_fps = fps if fps > 0 else AUTO_FPS
        wanted = np.rint(kept / video_fps * rate).astype(np.int64) + 1
    row_of = {int(f): i for i, f in enumerate(file_frame_index)}
    for j, frame in enumerate(wanted):
        row = row_of.get(int(frame))
        if row is not None:
            out[j] = keypoints[row]
    return out


def guess_layout(poses_url: str) -> str:
    """The layout of a pose source given without a dataset that implies one (generic)."""
    if storage.isdir(poses_url):
        names = storage.listdir(poses_url)
        if any(n.endswith(".skeleton") for n in names):
            return "ntu25"
        return "openpose18"
    # An mmaction/pyskl pickle: the layout follows its joint count.
    by_joints = {17: "coco17", 18: "openpose18", 25: "ntu25"}
    for keypoints, _ in _pickle_index(str(poses_url)).values():
        joints = keypoints.shape[2]
        if joints not in by_joints:
            raise ValueError(f"{poses_url}: poses with {joints} joints match no known layout")
        return by_joints[joints]
    return "coco17"


@functools.lru_cache(maxsize=2)
def _pickle_index(url: str) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    from ..formats.mmaction_pickle import read_mmaction_pickle

    with storage.local_copy(url) as path:
        return read_mmaction_pickle(path)


def load_precomputed(
    item: Any,
    *,
    kept_indices: np.ndarray,
    source_frames: int,
    fps: float,
    source_hw: tuple[int, int],
    stored_hw: tuple[int, int],
    poses_fps: str = "auto",
) -> tuple[np.ndarray, str, bool]:
    """(keypoints [F_kept, P, K, 3] in stored pixels, layout, tracked) for one manifest item."""
    from ..formats.kinetics_skeleton import read_kinetics_skeleton
    from ..formats.ntu_skeleton import read_ntu_skeleton

    url = item.pose_url
    extra = getattr(item, "extra", {}) or {}
    if extra.get("missing_skeleton") and url is None:
        # Published without skeleton data: the sample is kept with an empty pose.
        return np.zeros((len(kept_indices), 0, 25, 3), np.float32), "ntu25", True
    if url is None:
        raise FileNotFoundError("no precomputed pose file for this video")
    ext = os.path.splitext(str(url))[1].lower()
    if ext == ".json":
        with storage.open_file(url, "rb") as f:
            skel = read_kinetics_skeleton(f, source_hw[1], source_hw[0])
        kp = align_frames(
            skel.frame_index, skel.keypoints, kept_indices, source_frames, fps, poses_fps
        )
        return rescale_keypoints(kp, source_hw, stored_hw), "openpose18", False
    if ext == ".skeleton":
        with storage.open_file(url, "rb") as f:
            skel = read_ntu_skeleton(f)
        frames = np.arange(1, skel.keypoints.shape[0] + 1)
        kp = align_frames(frames, skel.keypoints, kept_indices, source_frames, fps, "native")
        # colorX/colorY are pixels of the Kinect's 1920x1080 colour frame, whatever size the
        # video file at hand was resized to.
        return rescale_keypoints(kp, NTU_COLOR_HW, stored_hw), "ntu25", True
    if ext in (".pkl", ".pickle"):
        index = _pickle_index(str(url))
        entry = index.get(item.key) or index.get(extra.get("ntu_name", ""))
        if entry is None:
            raise KeyError(f"{item.key} not in {url}")
        keypoints, meta = entry
        img_h, img_w = meta.get("img_shape", source_hw)
        frames = np.arange(1, keypoints.shape[0] + 1)
        kp = align_frames(frames, keypoints, kept_indices, source_frames, fps, "native")
        layout = guess_layout(str(url))
        return rescale_keypoints(kp, (img_h, img_w), stored_hw), layout, False
    raise ValueError(f"unknown pose file type {ext!r} ({url})")
