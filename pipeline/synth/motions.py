"""The motion library: each class of the synthetic datasets performs one of these movements.

A motion maps time (seconds, one value per frame) to joint angles of the body model in
:mod:`pipeline.synth.body` (degrees; ``lift`` in body heights). Periodic motions repeat with the
video's period and phase; one-shot motions happen once, starting at the video's onset. Mirror
images of one another (waving the left vs the right hand) are deliberately not both in the list:
the trainer's horizontal flip would make them the same class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["MotionParams", "MOTIONS", "MOTION_NAMES", "motion_angles", "is_one_shot"]

Angles = dict[str, np.ndarray]


@dataclass(frozen=True)
class MotionParams:
    """Per-video variation of a motion."""

    period: float  # seconds per cycle (periodic motions)
    phase: float  # radians
    amplitude: float  # scales the angles, about 1
    onset: float  # seconds (one-shot motions)
    duration: float  # seconds (one-shot motions)


def _cycle(t: np.ndarray, p: MotionParams) -> tuple[np.ndarray, np.ndarray]:
    theta = 2 * np.pi * t / p.period + p.phase
    return np.sin(theta), (1 - np.cos(theta)) / 2  # sine, and a 0..1 raised cosine


def _progress(t: np.ndarray, p: MotionParams) -> np.ndarray:
    x = np.clip((t - p.onset) / p.duration, 0.0, 1.0)
    return x * x * (3 - 2 * x)  # smoothstep: starts and ends at rest


def _waving(t: np.ndarray, p: MotionParams) -> Angles:
    s, _ = _cycle(t, p)
    return {"arm_abd_r": 140 + 0 * s, "elbow_abd_r": 35 * p.amplitude * s, "arm_flex_r": 10 + 0 * s}


def _raising_arms(t: np.ndarray, p: MotionParams) -> Angles:
    _, c = _cycle(t, p)
    a = 10 + 155 * p.amplitude * c
    return {"arm_abd_r": a, "arm_abd_l": a}


def _squatting(t: np.ndarray, p: MotionParams) -> Angles:
    _, c = _cycle(t, p)
    c = c * p.amplitude
    return {
        "leg_flex_r": 85 * c,
        "leg_flex_l": 85 * c,
        "leg_abd_r": 5 + 20 * c,
        "leg_abd_l": 5 + 20 * c,
        "knee_r": 140 * c,
        "knee_l": 140 * c,
        "arm_flex_r": 80 * c,
        "arm_flex_l": 80 * c,
        "torso_bow": 15 * c,
    }


def _side_kicking(t: np.ndarray, p: MotionParams) -> Angles:
    s, _ = _cycle(t, p)
    pulse = np.maximum(s, 0) ** 2 * p.amplitude
    return {
        "leg_abd_r": 3 + 65 * pulse,
        "knee_r": 25 * (1 - pulse) * (s > 0),
        "arm_abd_r": 25 + 20 * pulse,
        "arm_abd_l": 25 + 20 * pulse,
        "torso_side": 12 * pulse,  # leaning away from the kick keeps the balance
    }


def _walking(t: np.ndarray, p: MotionParams) -> Angles:
    s, _ = _cycle(t, p)
    r, left = np.maximum(s, 0) * p.amplitude, np.maximum(-s, 0) * p.amplitude
    return {
        "leg_flex_r": 55 * r,
        "knee_r": 95 * r,
        "leg_flex_l": 55 * left,
        "knee_l": 95 * left,
        "arm_flex_r": -30 * s,
        "arm_flex_l": 30 * s,
        "elbow_flex_r": 25 + 0 * s,
        "elbow_flex_l": 25 + 0 * s,
    }


def _jumping(t: np.ndarray, p: MotionParams) -> Angles:
    s, _ = _cycle(t, p)
    air, crouch = np.maximum(s, 0), np.maximum(-s, 0)
    return {
        "lift": 0.14 * p.amplitude * air,
        "leg_flex_r": 45 * crouch,
        "leg_flex_l": 45 * crouch,
        "knee_r": 80 * crouch,
        "knee_l": 80 * crouch,
        "arm_abd_r": 20 + 130 * air,
        "arm_abd_l": 20 + 130 * air,
    }


def _clapping(t: np.ndarray, p: MotionParams) -> Angles:
    _, c = _cycle(t, p)
    open_ = c * p.amplitude
    return {
        "arm_abd_r": 30 + 25 * open_,
        "arm_abd_l": 30 + 25 * open_,
        "arm_flex_r": 55 + 0 * c,
        "arm_flex_l": 55 + 0 * c,
        "elbow_abd_r": -75 + 70 * open_,
        "elbow_abd_l": -75 + 70 * open_,
        "elbow_flex_r": 20 + 0 * c,
        "elbow_flex_l": 20 + 0 * c,
    }


def _arm_circles(t: np.ndarray, p: MotionParams) -> Angles:
    theta = 2 * np.pi * t / p.period + p.phase
    a = 45 * p.amplitude
    return {
        "arm_abd_r": 90 + a * np.sin(theta),
        "arm_abd_l": 90 + a * np.sin(theta),
        "arm_flex_r": a * np.cos(theta),
        "arm_flex_l": a * np.cos(theta),
    }


def _side_bending(t: np.ndarray, p: MotionParams) -> Angles:
    s, _ = _cycle(t, p)
    lean = 32 * p.amplitude * s
    return {
        "torso_side": lean,
        "arm_abd_r": 10 + np.maximum(lean, 0) * 2.5,
        "arm_abd_l": 10 + np.maximum(-lean, 0) * 2.5,
    }


def _punching(t: np.ndarray, p: MotionParams) -> Angles:
    s, _ = _cycle(t, p)
    r, left = np.maximum(s, 0) * p.amplitude, np.maximum(-s, 0) * p.amplitude
    return {
        "arm_abd_r": 40 + 50 * r,
        "elbow_abd_r": 110 * (1 - r),
        "arm_abd_l": 40 + 50 * left,
        "elbow_abd_l": 110 * (1 - left),
    }


def _jumping_jacks(t: np.ndarray, p: MotionParams) -> Angles:
    s, c = _cycle(t, p)
    c = c * p.amplitude
    return {
        "arm_abd_r": 15 + 150 * c,
        "arm_abd_l": 15 + 150 * c,
        "leg_abd_r": 3 + 20 * c,
        "leg_abd_l": 3 + 20 * c,
        "lift": 0.04 * np.abs(s),
    }


def _bowing(t: np.ndarray, p: MotionParams) -> Angles:
    x = np.clip((t - p.onset) / p.duration, 0.0, 1.0)
    bow = 70 * p.amplitude * np.sin(np.pi * x)  # down and back up, once
    return {"torso_bow": bow, "arm_flex_r": 0.5 * bow, "arm_flex_l": 0.5 * bow}


def _raising_hand(t: np.ndarray, p: MotionParams) -> Angles:
    x = _progress(t, p)
    return {"arm_abd_r": 8 + 160 * p.amplitude * x, "elbow_abd_r": 20 * x}


def _sitting_down(t: np.ndarray, p: MotionParams) -> Angles:
    x = _progress(t, p) * p.amplitude
    return {
        "leg_flex_r": 90 * x,
        "leg_flex_l": 90 * x,
        "leg_abd_r": 5 + 12 * x,
        "leg_abd_l": 5 + 12 * x,
        "knee_r": 120 * x,
        "knee_l": 120 * x,
        "torso_bow": 25 * x,
        "arm_flex_r": 40 * x,
        "arm_flex_l": 40 * x,
    }


# Order matters: class k of a synthetic dataset performs the k-th motion (see dataset.py), so
# the class table stays the same whatever the seed.
MOTIONS: dict[str, tuple[Callable[[np.ndarray, MotionParams], Angles], bool]] = {
    "waving hand": (_waving, False),
    "raising arms": (_raising_arms, False),
    "squatting": (_squatting, False),
    "side kicking": (_side_kicking, False),
    "walking in place": (_walking, False),
    "jumping": (_jumping, False),
    "clapping": (_clapping, False),
    "arm circles": (_arm_circles, False),
    "bending sideways": (_side_bending, False),
    "punching": (_punching, False),
    "jumping jacks": (_jumping_jacks, False),
    "bowing": (_bowing, True),
    "raising one hand": (_raising_hand, True),
    "sitting down": (_sitting_down, True),
}
MOTION_NAMES: tuple[str, ...] = tuple(MOTIONS)


def is_one_shot(name: str) -> bool:
    return MOTIONS[name][1]


def motion_angles(name: str, t: np.ndarray, params: MotionParams) -> Angles:
    """Joint angles (degrees) and ``lift`` (body heights) of motion ``name`` at times ``t``."""
    fn, _ = MOTIONS[name]
    t = np.asarray(t, dtype=np.float64)
    return {
        k: np.broadcast_to(np.asarray(v, dtype=np.float64), t.shape)
        for k, v in fn(t, params).items()
    }
