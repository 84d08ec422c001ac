"""Scenes ("contexts"): a background and a scene object that can go with a class.

Context k is a fixed function of k (hue, wall pattern, object shape and colour), so a class keeps
its context across seeds and across the kinetics (in-context) and mimetics (out-of-context)
datasets of one class table. Each video jitters it (brightness, pattern phase, object place and
size). Backgrounds are light (HSV value >= 0.6) and the figures dark (value <= 0.42), so a
figure always stands out from whatever is behind it.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Context", "make_context", "render_background", "figure_colours", "occluder_colour"]

PATTERNS = ("plain", "horizontal stripes", "vertical stripes", "checks")
SHAPES = ("ball", "box", "cone", "pole")
_COLOUR_NAMES = (
    (0.04, "red"), (0.10, "orange"), (0.17, "yellow"), (0.25, "lime"), (0.40, "green"),
    (0.50, "teal"), (0.58, "cyan"), (0.68, "blue"), (0.78, "purple"), (0.90, "magenta"),
    (1.01, "red"),
)  # fmt: skip
_GOLDEN = 0.6180339887498949


@dataclass(frozen=True)
class Context:
    index: int
    hue: float  # wall and floor hue, 0..1
    pattern: str
    shape: str
    object_hue: float

    @property
    def name(self) -> str:
        return f"{_colour_name(self.object_hue)} {self.shape}"

    def to_json(self) -> dict:
        return {
            "index": self.index,
            "name": self.name,
            "hue": round(self.hue, 4),
            "pattern": self.pattern,
            "object": self.shape,
            "object_hue": round(self.object_hue, 4),
        }


def _colour_name(hue: float) -> str:
    return next(name for limit, name in _COLOUR_NAMES if hue < limit)


def make_context(index: int) -> Context:
    """Context ``index``: hues spread by the golden ratio, patterns and shapes cycled."""
    hue = (0.08 + index * _GOLDEN) % 1.0
    # The object's hue sits across the colour wheel from the wall, shifted per index so that
    # two contexts with close wall hues still differ in their object.
    object_hue = (hue + 0.5 + 0.13 * ((index * 7) % 5 - 2)) % 1.0
    return Context(
        index=index,
        hue=hue,
        pattern=PATTERNS[index % len(PATTERNS)],
        shape=SHAPES[(index // len(PATTERNS) + index) % len(SHAPES)],
        object_hue=object_hue,
    )


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1)))
    return (round(r * 255), round(g * 255), round(b * 255))


def render_background(
    context: Context, width: int, height: int, rng: np.random.Generator
) -> np.ndarray:
    """An RGB uint8 [H, W, 3] scene: patterned wall, floor, and the context's object."""
    bright = rng.uniform(0.94, 1.06)
    hue = context.hue + rng.uniform(-0.015, 0.015)
    wall = np.array(_rgb(hue, rng.uniform(0.35, 0.5), 0.84 * bright), dtype=np.float32)
    alt = np.array(_rgb(hue, rng.uniform(0.45, 0.6), 0.72 * bright), dtype=np.float32)
    floor = np.array(_rgb(hue + 0.03, rng.uniform(0.35, 0.5), 0.64 * bright), dtype=np.float32)

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    period = height * rng.uniform(0.14, 0.22)
    phase = rng.uniform(0, period)
    if context.pattern == "horizontal stripes":
        mask = ((yy + phase) // (period / 2)) % 2 == 1
    elif context.pattern == "vertical stripes":
        mask = ((xx + phase) // (period / 2)) % 2 == 1
    elif context.pattern == "checks":
        mask = (((xx + phase) // period + (yy + phase) // period) % 2) == 1
    else:  # plain: a soft vertical gradient
        mask = np.zeros_like(yy, dtype=bool)
    img = np.where(mask[..., None], alt, wall)
    if context.pattern == "plain":
        img = img * (0.94 + 0.06 * yy / max(height - 1, 1))[..., None]

    horizon = int(round(height * rng.uniform(0.62, 0.72)))
    img[horizon:] = floor
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)

    # The scene object stands on the floor, left or right of the middle where people stand.
    colour = _rgb(context.object_hue + rng.uniform(-0.015, 0.015), 0.85, 0.95)
    size = height * rng.uniform(0.13, 0.19)
    cx = width * (rng.uniform(0.06, 0.3) if rng.random() < 0.5 else rng.uniform(0.7, 0.94))
    base = horizon + (height - horizon) * rng.uniform(0.3, 0.8)
    s = 16  # cv2 fixed-point shift of 4 bits
    if context.shape == "ball":
        centre = (round(cx * s), round((base - size / 2) * s))
        cv2.circle(img, centre, round(size / 2 * s), colour, -1, cv2.LINE_AA, 4)
    elif context.shape == "box":
        pts = np.array(
            [[cx - size * 0.6, base - size], [cx + size * 0.6, base - size],
             [cx + size * 0.6, base], [cx - size * 0.6, base]]
        )  # fmt: skip
        cv2.fillPoly(img, [np.rint(pts * s).astype(np.int32)], colour, cv2.LINE_AA, 4)
    elif context.shape == "cone":
        pts = np.array([[cx, base - size * 1.2], [cx + size * 0.5, base], [cx - size * 0.5, base]])
        cv2.fillPoly(img, [np.rint(pts * s).astype(np.int32)], colour, cv2.LINE_AA, 4)
    else:  # pole
        pts = np.array(
            [[cx - size * 0.12, base - size * 2.2], [cx + size * 0.12, base - size * 2.2],
             [cx + size * 0.12, base], [cx - size * 0.12, base]]
        )  # fmt: skip
        cv2.fillPoly(img, [np.rint(pts * s).astype(np.int32)], colour, cv2.LINE_AA, 4)
    return img


def figure_colours(rng: np.random.Generator) -> dict[str, tuple[int, int, int]]:
    """Dark clothes and skin, so the figure differs from every (light) background."""
    return {
        "shirt": _rgb(rng.uniform(0, 1), rng.uniform(0.3, 0.8), rng.uniform(0.12, 0.3)),
        "trousers": _rgb(rng.uniform(0, 1), rng.uniform(0.2, 0.6), rng.uniform(0.1, 0.25)),
        "skin": _rgb(rng.uniform(0.03, 0.1), rng.uniform(0.4, 0.6), rng.uniform(0.28, 0.42)),
    }


def occluder_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A neutral grey-beige panel that hides a person; it goes with no class."""
    return _rgb(rng.uniform(0.05, 0.15), rng.uniform(0.0, 0.15), rng.uniform(0.48, 0.58))
