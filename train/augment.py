"""Spatial augmentation applied identically to frames, keypoints and stored rasters.

One :class:`Crop` (a box in stored-frame pixels, an output side and a flip) is drawn per clip
and then applied to each modality by its own function, so that RGB, keypoints and rasters stay
aligned by construction:

- training: TSM-style multi-scale crop (sides from {1, .875, .75, .66} x the stored short side,
  width and height at most one scale step apart, random offsets), resized to the input size,
  horizontal flip with p = 0.5 (paper section 3.5, after TSM);
- testing: the centre square of the stored frame (side = its short side), resized.

The pose input has a crop of its own (``--pose-crop``): the RGB crop (``frame``, the paper's
code) or a box around the person (``person``, PoseC3D's ``PoseCompact``: the union box of the
clip's keypoints, padded and squared, jittered in training; :func:`person_crop`). Its side is
the raster side (``--pose-size``), independent of the RGB input size.

Coordinates follow the contract's pixel-centre convention (docs/design.md, "Pose and rasters"):
a stored-frame point x lands at x' = (x - x0 + 0.5) * (S / w) - 0.5 in the S x S output, which is
also where bilinear resizing with ``align_corners=False`` puts it; a flip maps x' to S - 1 - x'
and swaps left and right joints.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.raster import flip_raster, render_clip
from pipeline.skeletons import Layout, flip_keypoints

__all__ = [
    "SCALES",
    "Crop",
    "Normalisation",
    "IMAGENET",
    "UNIT",
    "sample_train_crop",
    "center_crop",
    "crop_frames",
    "crop_keypoints",
    "crop_raster",
    "person_box",
    "person_crop",
    "pose_crop",
    "render_pose",
    "normalise_rgb",
]

# TSM's GroupMultiScaleCrop scales (Lin et al. 2019), used by the paper's code (section 3.5).
SCALES: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)
# Crop width and height may differ by at most this many scale steps (TSM's max_distort).
MAX_DISTORT = 1
# PoseC3D's PoseCompact (mmaction2 ``PoseCompact``: padding 0.25, threshold 10, hw_ratio 1):
# the union box grows by this fraction of its size, and a box under PERSON_MIN_SIDE stored
# pixels on either side is not trusted (the frame crop is used).
PERSON_PADDING = 0.25
PERSON_MIN_SIDE = 10.0
# Training jitter of the person box: its side is scaled by up to +-10 % and its centre moved
# by up to 10 % of the side (PoseC3D jitters with a random resized crop of the compact box).
PERSON_SCALE_JITTER = 0.1
PERSON_SHIFT_JITTER = 0.1
POSE_CROPS: tuple[str, ...] = ("frame", "person")


@dataclass(frozen=True)
class Crop:
    """Box (x0, y0, w, h) in stored-frame pixels, resized to ``size`` x ``size``, then flipped.

    RGB crops have integer boxes inside the frame; person crops (:func:`person_crop`) may have
    fractional boxes reaching outside it, which keypoints and rasters handle exactly.
    """

    x0: float
    y0: float
    w: float
    h: float
    size: int
    flip: bool = False


@dataclass(frozen=True)
class Normalisation:
    """RGB input = (pixel / 255 - mean) / std, per channel."""

    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def to_json(self) -> dict:
        return {"scale": 1 / 255, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_json(cls, data: dict) -> Normalisation:
        return cls(tuple(data["mean"]), tuple(data["std"]))


# Random initialisation: /255 only. ImageNet weights: the statistics they were trained with.
UNIT = Normalisation()
IMAGENET = Normalisation((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def sample_train_crop(
    rng: np.random.Generator,
    height: int,
    width: int,
    size: int,
    scales: tuple[float, ...] = SCALES,
    max_distort: int = MAX_DISTORT,
    flip_prob: float = 0.5,
) -> Crop:
    """A TSM multi-scale crop of a ``height`` x ``width`` frame with a random flip."""
    base = min(height, width)
    sides = [max(1, int(base * s)) for s in scales]
    pairs = [
        (w, h)
        for i, h in enumerate(sides)
        for j, w in enumerate(sides)
        if abs(i - j) <= max_distort
    ]
    w, h = pairs[int(rng.integers(len(pairs)))]
    x0 = int(rng.integers(width - w + 1))
    y0 = int(rng.integers(height - h + 1))
    flip = bool(rng.random() < flip_prob)
    return Crop(x0, y0, w, h, size, flip)


def center_crop(height: int, width: int, size: int) -> Crop:
    """The centre square of the frame (side = its short side), resized to ``size``."""
    side = min(height, width)
    return Crop((width - side) // 2, (height - side) // 2, side, side, size, False)


def person_box(
    keypoints: np.ndarray,
    score_threshold: float,
    padding: float = PERSON_PADDING,
    min_side: float = PERSON_MIN_SIDE,
) -> tuple[float, float, float] | None:
    """PoseCompact's box of a clip: ``(centre x, centre y, side)`` in stored-frame pixels.

    The union box of every keypoint of the clip (all frames, all persons) whose score reaches
    ``score_threshold``, grown by ``padding`` of its size and made square (its longer side).
    None when no keypoint passes or the box is under ``min_side`` on either side.
    """
    kp = np.asarray(keypoints, dtype=np.float32).reshape(-1, 3)
    ok = np.isfinite(kp).all(axis=1) & (kp[:, 2] >= score_threshold)
    if not ok.any():
        return None
    xy = kp[ok, :2]
    (x_min, y_min), (x_max, y_max) = xy.min(axis=0), xy.max(axis=0)
    if x_max - x_min < min_side or y_max - y_min < min_side:
        return None
    side = float(max(x_max - x_min, y_max - y_min)) * (1.0 + padding)
    return float(x_min + x_max) / 2, float(y_min + y_max) / 2, side


def person_crop(
    keypoints: np.ndarray,
    score_threshold: float,
    size: int,
    flip: bool,
    rng: np.random.Generator | None = None,
) -> Crop | None:
    """The person-centred crop of a clip (:func:`person_box`), jittered when ``rng`` is given.

    In training (``rng``) the side is scaled by a factor in [0.9, 1.1] and the centre moved by
    up to 10 % of the side in x and y. ``flip`` is the RGB crop's, so both streams see the same
    mirror image. None when the clip has no usable keypoints.
    """
    box = person_box(keypoints, score_threshold)
    if box is None:
        return None
    cx, cy, side = box
    if rng is not None:
        side *= 1.0 + PERSON_SCALE_JITTER * float(rng.uniform(-1.0, 1.0))
        cx += PERSON_SHIFT_JITTER * side * float(rng.uniform(-1.0, 1.0))
        cy += PERSON_SHIFT_JITTER * side * float(rng.uniform(-1.0, 1.0))
    # Pixel centres at integers: the box [x0 - 0.5, x0 + w - 0.5] is centred on cx.
    return Crop(cx + 0.5 - side / 2, cy + 0.5 - side / 2, side, side, size, flip)


def pose_crop(
    mode: str,
    frame_crop: Crop,
    keypoints: np.ndarray | None,
    score_threshold: float,
    size: int,
    rng: np.random.Generator | None = None,
) -> Crop:
    """The crop of the pose input: ``frame`` (the RGB crop at the raster side) or ``person``
    (:func:`person_crop`, falling back to the frame crop when no keypoint is found)."""
    if mode not in POSE_CROPS:
        raise ValueError(f"pose crop must be one of {', '.join(POSE_CROPS)}, got {mode!r}")
    if mode == "person" and keypoints is not None:
        crop = person_crop(keypoints, score_threshold, size, frame_crop.flip, rng)
        if crop is not None:
            return crop
    return replace(frame_crop, size=size)


def crop_frames(frames: np.ndarray, crop: Crop) -> torch.Tensor:
    """uint8 [T, H, W, 3] RGB -> uint8 [T, 3, S, S].

    Bilinear with ``align_corners=False`` (the contract's pixel-centre convention) and
    antialiasing when shrinking, as PIL's resize in TSM's pipeline. It runs on uint8 in
    channels-last layout (the HWC frames viewed as NCHW, no copy), torch's vectorised path,
    about 10x faster than on float; the result stays uint8 so that DataLoader workers pass a
    quarter of the bytes, and :func:`normalise_rgb` runs on the training device.
    """
    box = frames[:, crop.y0 : crop.y0 + crop.h, crop.x0 : crop.x0 + crop.w]
    x = torch.from_numpy(box).permute(0, 3, 1, 2)
    if (crop.h, crop.w) != (crop.size, crop.size):
        x = F.interpolate(
            x, size=(crop.size, crop.size), mode="bilinear", align_corners=False, antialias=True
        )
    if crop.flip:
        x = x.flip(-1)
    return x.contiguous()


def crop_keypoints(keypoints: np.ndarray, crop: Crop, layout: Layout) -> np.ndarray:
    """Keypoints [..., K, 3] in stored-frame pixels -> the same points in the S x S output.

    x' = (x - x0 + 0.5) * (S / w) - 0.5 (and the same for y with y0, h); then, if the crop
    flips, x' -> S - 1 - x' with left/right joints swapped. Scores are unchanged; points
    outside the crop stay where they land (the renderer clips them).
    """
    kp = np.array(keypoints, dtype=np.float32, copy=True)
    kp[..., 0] = (kp[..., 0] - crop.x0 + 0.5) * (crop.size / crop.w) - 0.5
    kp[..., 1] = (kp[..., 1] - crop.y0 + 0.5) * (crop.size / crop.h) - 0.5
    if crop.flip:
        kp = flip_keypoints(kp, crop.size, layout)
    return kp


def crop_raster(
    raster: np.ndarray, crop: Crop, layout: Layout, frame_hw: tuple[int, int], out_side: int
) -> np.ndarray:
    """A stored raster float32 [T, C, h, w] (h = H / 4) -> the crop's [T, C, s, s].

    Output pixel u samples the stored raster where the same image point lies: with the
    pixel-centre convention at both ends that is a linear map, evaluated by ``grid_sample``
    (bilinear, zeros outside). Flipping remaps the channels (``flip_raster``), as the contract
    requires for rasters of flipped poses.
    """
    height, width = frame_hw
    s = out_side
    u = torch.arange(s, dtype=torch.float64) + 0.5
    # Stored-frame coordinate of output pixel u's centre, as a fraction of the frame:
    # ((u + 0.5) * (S / s) * (w / S) + x0) / W, mapped to grid_sample's [-1, 1].
    gx = ((u * (crop.w / s) + crop.x0) / width) * 2 - 1
    gy = ((u * (crop.h / s) + crop.y0) / height) * 2 - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1).float()
    x = torch.from_numpy(np.ascontiguousarray(raster, dtype=np.float32))
    out = F.grid_sample(
        x,
        grid.unsqueeze(0).expand(x.shape[0], -1, -1, -1),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    ).numpy()
    return flip_raster(out, layout) if crop.flip else out


def render_pose(
    keypoints: np.ndarray,
    layout: Layout,
    size: int,
    raster_params,
    out: np.ndarray | None = None,
    side: int | None = None,
) -> np.ndarray:
    """Rasters float32 [T, K + 2B, s, s] of keypoints [T, P, K, 3] in S x S input pixels.

    ``side`` s defaults to S / 4 (the paper's raster); ``side == size`` renders keypoints that
    are already in raster pixels. Rendering after augmentation is exact at any crop and scale,
    where cropping a stored raster interpolates it. Raster parameters (sigma, PAF width at
    raster resolution, persons, score threshold) are the dataset's (paper section 3.2) unless
    the model was trained with another sigma (``--pose-sigma``).
    """
    side = size // 4 if side is None else side
    return render_clip(
        keypoints,
        layout.bones,
        (side, side),
        scale=side / size,
        sigma=raster_params.sigma,
        paf_width=raster_params.paf_width,
        max_persons=raster_params.max_persons,
        score_threshold=raster_params.score_threshold,
        out=out,
    )


def normalise_rgb(rgb: torch.Tensor, norm: Normalisation) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float (x / 255 - mean) / std, on the tensor's device."""
    x = rgb.float().div_(255.0)
    if norm == UNIT:
        return x
    mean = torch.tensor(norm.mean, device=x.device, dtype=x.dtype).view(3, 1, 1)
    std = torch.tensor(norm.std, device=x.device, dtype=x.dtype).view(3, 1, 1)
    return x.sub_(mean).div_(std)
