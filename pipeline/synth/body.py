"""A 3D articulated body: proportions, forward kinematics, and its joints in both layouts.

Body coordinates (metres): X to the body's left, Y up, Z forward (the way the body faces); the
feet rest on Y = 0. The model has the 25 Kinect v2 joints of NTU RGB+D (``ntu25`` order, so
indices 0..24 are that layout) plus five face points (nose, eyes, ears) for OpenPose-18.

Limb directions come from two angles: abduction (away from the body, in the frontal plane)
and flexion (forward, in the sagittal plane); 0/0 hangs straight down. A forearm or shin adds
its elbow/knee angles to the upper limb's. This is not a physical skeleton, only a figure whose
movements are distinct and smooth, which is all a synthetic action class needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "BodyShape",
    "NUM_MODEL_JOINTS",
    "NTU25_FROM_MODEL",
    "OPENPOSE18_FROM_MODEL",
    "forward_kinematics",
    "sample_shape",
]

# ntu25, 0-based: the first 25 model joints.
SPINE_BASE, SPINE_MID, NECK, HEAD = 0, 1, 2, 3
SHOULDER_L, ELBOW_L, WRIST_L, HAND_L = 4, 5, 6, 7
SHOULDER_R, ELBOW_R, WRIST_R, HAND_R = 8, 9, 10, 11
HIP_L, KNEE_L, ANKLE_L, FOOT_L = 12, 13, 14, 15
HIP_R, KNEE_R, ANKLE_R, FOOT_R = 16, 17, 18, 19
SPINE_SHOULDER, TIP_L, THUMB_L, TIP_R, THUMB_R = 20, 21, 22, 23, 24
NOSE, EYE_R, EYE_L, EAR_R, EAR_L = 25, 26, 27, 28, 29
NUM_MODEL_JOINTS = 30

NTU25_FROM_MODEL = np.arange(25)
# OpenPose-18 order: Nose, Neck, RShoulder, RElbow, RWrist, LShoulder, LElbow, LWrist, RHip,
# RKnee, RAnkle, LHip, LKnee, LAnkle, REye, LEye, REar, LEar. OpenPose's neck sits between the
# shoulders, which is Kinect's SpineShoulder (Kinect's "Neck" is higher up).
OPENPOSE18_FROM_MODEL = np.array(
    [NOSE, SPINE_SHOULDER, SHOULDER_R, ELBOW_R, WRIST_R, SHOULDER_L, ELBOW_L, WRIST_L,
     HIP_R, KNEE_R, ANKLE_R, HIP_L, KNEE_L, ANKLE_L, EYE_R, EYE_L, EAR_R, EAR_L]
)  # fmt: skip


@dataclass(frozen=True)
class BodyShape:
    """Body proportions in metres."""

    height: float
    head_radius: float
    neck: float  # spine shoulder to Kinect neck
    head_offset: float  # Kinect neck to head centre
    torso: float  # spine base to spine shoulder
    shoulder_width: float
    hip_width: float
    upper_arm: float
    forearm: float
    hand: float  # wrist to hand tip
    thigh: float
    shin: float
    foot: float


def sample_shape(rng: np.random.Generator, height: float | None = None) -> BodyShape:
    """A body with everyday proportions, each jittered by up to 8 %."""
    h = float(height if height is not None else rng.uniform(1.55, 1.90))

    def part(fraction: float) -> float:
        return float(h * fraction * rng.uniform(0.92, 1.08))

    return BodyShape(
        height=h,
        head_radius=part(0.065),
        neck=part(0.045),
        head_offset=part(0.075),
        torso=part(0.30),
        shoulder_width=part(0.23),
        hip_width=part(0.16),
        upper_arm=part(0.17),
        forearm=part(0.15),
        hand=part(0.09),
        thigh=part(0.24),
        shin=part(0.24),
        foot=part(0.10),
    )


def _direction(abd: np.ndarray, flex: np.ndarray, side: float) -> np.ndarray:
    """Unit vectors [T, 3] for abduction/flexion angles (radians); side +1 left, -1 right."""
    return np.stack(
        [side * np.sin(abd) * np.cos(flex), -np.cos(abd) * np.cos(flex), np.sin(flex)], axis=-1
    )


def forward_kinematics(shape: BodyShape, angles: dict[str, np.ndarray], frames: int) -> np.ndarray:
    """Model joints [T, 30, 3] in body coordinates for per-frame ``angles`` (degrees).

    Missing angles default to rest (arms slightly away from the body); ``lift`` (body heights)
    raises the whole body, otherwise the lowest foot point touches the floor.
    """

    def angle(name: str, default: float = 0.0) -> np.ndarray:
        value = angles.get(name)
        if value is None:
            return np.full(frames, np.deg2rad(default))
        return np.deg2rad(np.broadcast_to(value, (frames,)).astype(np.float64))

    j = np.zeros((frames, NUM_MODEL_JOINTS, 3), dtype=np.float64)
    side_lean, bow = angle("torso_side"), angle("torso_bow")
    up = np.stack(
        [np.sin(side_lean) * np.cos(bow), np.cos(side_lean) * np.cos(bow), np.sin(bow)], axis=-1
    )
    lateral = np.stack([np.cos(side_lean), -np.sin(side_lean), np.zeros(frames)], axis=-1)
    forward = np.cross(lateral, up)  # body frame is right-handed: left x up = forward
    x_axis = np.array([1.0, 0.0, 0.0])
    z_axis = np.array([0.0, 0.0, 1.0])

    # Spine and head, with the spine base at the origin (moved onto the floor below).
    j[:, SPINE_MID] = up * shape.torso * 0.5
    j[:, SPINE_SHOULDER] = up * shape.torso
    j[:, NECK] = j[:, SPINE_SHOULDER] + up * shape.neck
    j[:, HEAD] = j[:, NECK] + up * shape.head_offset
    r = shape.head_radius
    head = j[:, HEAD]
    j[:, NOSE] = head + forward * 0.9 * r - up * 0.15 * r
    j[:, EYE_R] = head - lateral * 0.38 * r + up * 0.2 * r + forward * 0.75 * r
    j[:, EYE_L] = head + lateral * 0.38 * r + up * 0.2 * r + forward * 0.75 * r
    j[:, EAR_R] = head - lateral * 0.82 * r + forward * 0.1 * r
    j[:, EAR_L] = head + lateral * 0.82 * r + forward * 0.1 * r

    for side, sfx, (sh, el, wr, ha, tip, th), (hip, kn, an, ft) in (
        (-1.0, "r", (SHOULDER_R, ELBOW_R, WRIST_R, HAND_R, TIP_R, THUMB_R),
         (HIP_R, KNEE_R, ANKLE_R, FOOT_R)),
        (1.0, "l", (SHOULDER_L, ELBOW_L, WRIST_L, HAND_L, TIP_L, THUMB_L),
         (HIP_L, KNEE_L, ANKLE_L, FOOT_L)),
    ):  # fmt: skip
        abd, flex = angle(f"arm_abd_{sfx}", 8.0), angle(f"arm_flex_{sfx}")
        upper = _direction(abd, flex, side)
        fore = _direction(abd + angle(f"elbow_abd_{sfx}"), flex + angle(f"elbow_flex_{sfx}"), side)
        j[:, sh] = j[:, SPINE_SHOULDER] + side * lateral * shape.shoulder_width / 2
        j[:, sh] -= up * 0.02 * shape.height
        j[:, el] = j[:, sh] + upper * shape.upper_arm
        j[:, wr] = j[:, el] + fore * shape.forearm
        j[:, ha] = j[:, wr] + fore * shape.hand * 0.4
        j[:, tip] = j[:, wr] + fore * shape.hand
        # The thumb points forward and towards the body's midline.
        thumb_dir = 0.7 * forward - 0.5 * side * lateral + 0.3 * fore
        thumb_dir /= np.linalg.norm(thumb_dir, axis=-1, keepdims=True)
        j[:, th] = j[:, ha] + thumb_dir * shape.hand * 0.45

        leg_abd, leg_flex = angle(f"leg_abd_{sfx}", 3.0), angle(f"leg_flex_{sfx}")
        thigh = _direction(leg_abd, leg_flex, side)
        shin = _direction(leg_abd * 0.5, leg_flex - angle(f"knee_{sfx}"), side)
        j[:, hip] = side * x_axis * shape.hip_width / 2
        j[:, kn] = j[:, hip] + thigh * shape.thigh
        j[:, an] = j[:, kn] + shin * shape.shin
        j[:, ft] = j[:, an] + z_axis * shape.foot * 0.8 - np.array([0, 0.04 * shape.height, 0])

    feet = j[:, [ANKLE_L, ANKLE_R, FOOT_L, FOOT_R], 1].min(axis=1)
    lift = np.broadcast_to(angles.get("lift", 0.0), (frames,)) * shape.height
    j[:, :, 1] += (lift - feet)[:, None]
    return j
