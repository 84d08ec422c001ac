"""Keypoint layouts: joint names, directed bones and flip pairs, and conversions between layouts.

The single place where the pipeline (rasters, stored keypoints, exports) and the trainer (flip
augmentation, raster channel count) learn what a layout is. The bone order and direction are part
of the shard format (the PAF channel order): see docs/design.md, "Pose and rasters".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Layout",
    "LAYOUTS",
    "LAYOUT_NAMES",
    "get_layout",
    "convert_keypoints",
    "can_convert",
    "flip_keypoints",
]


@dataclass(frozen=True, eq=False)
class Layout:
    """A keypoint layout.

    ``bones`` [B, 2] are directed (first joint, second joint) pairs; ``flip_pairs`` [n, 2] are the
    left/right joint pairs that a horizontal flip swaps.
    """

    name: str
    names: tuple[str, ...]
    bones: np.ndarray
    flip_pairs: np.ndarray
    # Derived tables, filled in __post_init__.
    flip_index: np.ndarray = field(init=False, repr=False)
    bone_flip_index: np.ndarray = field(init=False, repr=False)
    bone_flip_sign: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        bones = np.asarray(self.bones, dtype=np.int64).reshape(-1, 2)
        pairs = np.asarray(self.flip_pairs, dtype=np.int64).reshape(-1, 2)
        k = len(self.names)
        if bones.size and (bones.min() < 0 or bones.max() >= k):
            raise ValueError(f"layout {self.name}: bone joint index out of range")
        perm = np.arange(k)
        for a, b in pairs:
            perm[a], perm[b] = b, a
        # Flipping a pose maps bone (a, b) with vector v to the bone (f(a), f(b)). If the layout
        # lists that pair, the flipped bone's vector is (-v_x, v_y); if it lists it reversed as
        # (f(b), f(a)) (e.g. shoulder to shoulder) the vector is (v_x, -v_y).
        lookup = {(int(a), int(b)): i for i, (a, b) in enumerate(bones)}
        flip_idx = np.zeros(len(bones), dtype=np.int64)
        flip_sign = np.zeros((len(bones), 2), dtype=np.float32)
        for i, (a, b) in enumerate(bones):
            fa, fb = int(perm[a]), int(perm[b])
            if (fa, fb) in lookup:
                flip_idx[i] = lookup[(fa, fb)]
                flip_sign[i] = (-1.0, 1.0)
            elif (fb, fa) in lookup:
                flip_idx[i] = lookup[(fb, fa)]
                flip_sign[i] = (1.0, -1.0)
            else:
                raise ValueError(f"layout {self.name}: bone {(a, b)} has no mirror bone")
        for name, value in (
            ("bones", bones),
            ("flip_pairs", pairs),
            ("flip_index", perm),
            ("bone_flip_index", flip_idx),
            ("bone_flip_sign", flip_sign),
        ):
            value.setflags(write=False)
            object.__setattr__(self, name, value)

    @property
    def num_joints(self) -> int:
        return len(self.names)

    @property
    def num_bones(self) -> int:
        return len(self.bones)

    @property
    def num_channels(self) -> int:
        """Raster channels: K heatmaps, then (x, y) for each of the B bones."""
        return self.num_joints + 2 * self.num_bones

    @property
    def channel_flip_index(self) -> np.ndarray:
        """For each output channel of a flipped raster, the source channel it comes from."""
        k = self.num_joints
        idx = [int(j) for j in self.flip_index]
        for b in range(self.num_bones):
            src = int(self.bone_flip_index[b])
            # Output bone b of the flipped raster equals source bone src mirrored; src's own
            # mirror is b, so reading src's channels at b's slot is the inverse mapping.
            idx += [k + 2 * src, k + 2 * src + 1]
        return np.asarray(idx, dtype=np.int64)

    @property
    def channel_flip_sign(self) -> np.ndarray:
        """Sign applied to each channel of a flipped raster (1 for heatmaps)."""
        k = self.num_joints
        sign = np.ones(self.num_channels, dtype=np.float32)
        for b in range(self.num_bones):
            sign[k + 2 * b : k + 2 * b + 2] = self.bone_flip_sign[b]
        return sign

    def to_json(self) -> dict:
        return {
            "layout": self.name,
            "joint_names": list(self.names),
            "bones": self.bones.tolist(),
            "flip_pairs": self.flip_pairs.tolist(),
        }


_COCO17_NAMES = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
# mmpose's COCO skeleton links, 0-based.
_COCO17_BONES = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)  # fmt: skip
_COCO17_FLIP = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))

_OPENPOSE18_NAMES = (
    "Nose",
    "Neck",
    "RShoulder",
    "RElbow",
    "RWrist",
    "LShoulder",
    "LElbow",
    "LWrist",
    "RHip",
    "RKnee",
    "RAnkle",
    "LHip",
    "LKnee",
    "LAnkle",
    "REye",
    "LEye",
    "REar",
    "LEar",
)
# The official IntegralAction code's limbs.
_OPENPOSE18_BONES = (
    (0, 1), (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
    (11, 12), (12, 13), (0, 14), (0, 15), (14, 16), (15, 17),
)  # fmt: skip
_OPENPOSE18_FLIP = ((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13), (14, 15), (16, 17))

# Kinect v2 joints 1..25, stored 0-based.
_NTU25_NAMES = (
    "SpineBase",
    "SpineMid",
    "Neck",
    "Head",
    "ShoulderLeft",
    "ElbowLeft",
    "WristLeft",
    "HandLeft",
    "ShoulderRight",
    "ElbowRight",
    "WristRight",
    "HandRight",
    "HipLeft",
    "KneeLeft",
    "AnkleLeft",
    "FootLeft",
    "HipRight",
    "KneeRight",
    "AnkleRight",
    "FootRight",
    "SpineShoulder",
    "HandTipLeft",
    "ThumbLeft",
    "HandTipRight",
    "ThumbRight",
)
_NTU25_BONES_1BASED = (
    (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9), (11, 10),
    (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19),
    (22, 23), (23, 8), (24, 25), (25, 12),
)  # fmt: skip
_NTU25_FLIP_1BASED = ((5, 9), (6, 10), (7, 11), (8, 12), (13, 17), (14, 18), (15, 19), (16, 20),
                      (22, 24), (23, 25))  # fmt: skip

LAYOUTS: dict[str, Layout] = {
    "coco17": Layout("coco17", _COCO17_NAMES, np.array(_COCO17_BONES), np.array(_COCO17_FLIP)),
    "openpose18": Layout(
        "openpose18", _OPENPOSE18_NAMES, np.array(_OPENPOSE18_BONES), np.array(_OPENPOSE18_FLIP)
    ),
    "ntu25": Layout(
        "ntu25",
        _NTU25_NAMES,
        np.array(_NTU25_BONES_1BASED) - 1,
        np.array(_NTU25_FLIP_1BASED) - 1,
    ),
}
LAYOUT_NAMES: tuple[str, ...] = tuple(LAYOUTS)


def get_layout(name: str | Layout) -> Layout:
    """The layout called ``name`` (``coco17``, ``openpose18`` or ``ntu25``)."""
    if isinstance(name, Layout):
        return name
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(
            f"unknown keypoint layout {name!r}; expected one of {', '.join(LAYOUT_NAMES)}"
        ) from None


# openpose18 joint i is coco17 joint _OPENPOSE_FROM_COCO[i]; -1 marks the neck (shoulder midpoint).
_OPENPOSE_FROM_COCO = np.array([0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3])
_COCO_FROM_OPENPOSE = np.array(
    [int(np.where(_OPENPOSE_FROM_COCO == c)[0][0]) for c in range(len(_COCO17_NAMES))]
)
_CONVERSIONS = {("coco17", "openpose18"), ("openpose18", "coco17")}


def can_convert(src: str, dst: str) -> bool:
    return src == dst or (src, dst) in _CONVERSIONS


def convert_keypoints(keypoints: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Convert keypoints [..., K_src, 3] (x, y, score) from layout ``src`` to ``dst``.

    coco17 -> openpose18 builds the neck as the midpoint of the shoulders with the smaller of
    their two scores; openpose18 -> coco17 drops the neck.
    """
    kp = np.asarray(keypoints, dtype=np.float32)
    src_l = get_layout(src)
    get_layout(dst)  # a clear error for an unknown target layout
    if kp.shape[-2] != src_l.num_joints:
        raise ValueError(
            f"keypoints have {kp.shape[-2]} joints; layout {src} has {src_l.num_joints}"
        )
    if src == dst:
        return kp.copy()
    if (src, dst) == ("coco17", "openpose18"):
        out = kp[..., np.maximum(_OPENPOSE_FROM_COCO, 0), :].copy()
        ls, rs = kp[..., 5, :], kp[..., 6, :]
        out[..., 1, :2] = (ls[..., :2] + rs[..., :2]) / 2
        out[..., 1, 2] = np.minimum(ls[..., 2], rs[..., 2])
        return out
    if (src, dst) == ("openpose18", "coco17"):
        return kp[..., _COCO_FROM_OPENPOSE, :].copy()
    raise ValueError(f"no conversion from layout {src} to {dst}; supported: coco17 <-> openpose18")


def flip_keypoints(keypoints: np.ndarray, width: int, layout: str | Layout) -> np.ndarray:
    """Mirror keypoints [..., K, 3] horizontally in an image ``width`` pixels wide.

    x -> width - 1 - x (pixel centres at integers), and left/right joints swap.
    """
    lay = get_layout(layout)
    kp = np.asarray(keypoints, dtype=np.float32)
    out = kp[..., lay.flip_index, :].copy()
    out[..., 0] = (width - 1) - out[..., 0]
    return out
