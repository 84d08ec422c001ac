"""Plain numpy rasters: the specification that :mod:`pipeline.raster`'s kernels are tested against.

Slow on purpose: every Gaussian and every PAF segment is evaluated over the whole image, with
loops over frames, persons, joints and bones, straight from the formulas in docs/design.md
("Pose and rasters"). No truncation of the Gaussian. Used by the tests and as the benchmark's
baseline; never on a hot path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.raster import _check_out, _normalize_args

__all__ = ["render_clip_reference"]


def _person_order(kp_frame: np.ndarray) -> np.ndarray:
    """Person indices by decreasing mean keypoint score; non-finite scores count as 0.

    The sum runs joint by joint in float64 (not numpy's pairwise sum) so that near ties rank
    exactly as in the kernel; a stable sort keeps tied persons in input order.
    """
    num_persons, num_joints = kp_frame.shape[:2]
    means = np.empty(num_persons)
    for p in range(num_persons):
        total = 0.0
        for s in kp_frame[p, :, 2].astype(np.float64):
            if np.isfinite(s):
                total += s
        means[p] = total / num_joints
    return np.argsort(-means, kind="stable")


def render_clip_reference(
    keypoints: np.ndarray,
    bones: np.ndarray | Sequence[Sequence[int]],
    out_hw: tuple[int, int],
    scale: float = 1.0,
    sigma: float = 0.5,
    paf_width: float = 1.0,
    max_persons: int = 5,
    score_threshold: float = 0.1,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Same contract as :func:`pipeline.raster.render_clip`, in plain numpy."""
    kp, bone_arr, h, w = _normalize_args(
        keypoints, bones, out_hw, scale, sigma, paf_width, max_persons, score_threshold
    )
    num_frames, _, num_joints, _ = kp.shape
    num_bones = len(bone_arr)
    shape = (num_frames, num_joints + 2 * num_bones, h, w)
    if out is None:
        out = np.zeros(shape, dtype=np.float32)
    else:
        _check_out(out, shape)
        out[...] = 0
    # Pixel centres at integer coordinates.
    py, px = np.mgrid[0:h, 0:w].astype(np.float64)
    for f in range(num_frames):
        heat = np.zeros((num_joints, h, w))
        paf_sum = np.zeros((num_bones, 2, h, w))
        cover = np.zeros((num_bones, h, w))
        for p in _person_order(kp[f])[:max_persons]:
            x, y, s = kp[f, p].astype(np.float64).T
            valid = np.isfinite(x) & np.isfinite(y) & np.isfinite(s) & (s >= score_threshold)
            xr = (x + 0.5) * scale - 0.5
            yr = (y + 0.5) * scale - 0.5
            for j in range(num_joints):
                if valid[j]:
                    d2 = (px - xr[j]) ** 2 + (py - yr[j]) ** 2
                    heat[j] += np.exp(-d2 / (2.0 * sigma * sigma))
            for b, (a, c) in enumerate(bone_arr):
                if not (valid[a] and valid[c]):
                    continue
                dx, dy = xr[c] - xr[a], yr[c] - yr[a]
                len2 = dx * dx + dy * dy
                if not len2 > 0.0:  # the two joints coincide: no direction
                    continue
                rx, ry = px - xr[a], py - yr[a]
                dot = rx * dx + ry * dy  # projection onto the bone, times its length
                cross = rx * dy - ry * dx  # distance to the line, times the length
                on = (dot >= 0.0) & (dot <= len2) & (cross * cross <= paf_width**2 * len2)
                norm = np.sqrt(len2)
                paf_sum[b, 0][on] += dx / norm
                paf_sum[b, 1][on] += dy / norm
                cover[b][on] += 1
        out[f, :num_joints] = np.minimum(heat, 1.0)
        mean = paf_sum / np.maximum(cover, 1.0)[:, None]
        out[f, num_joints:] = mean.reshape(2 * num_bones, h, w)
    return out
