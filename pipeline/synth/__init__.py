"""Synthetic action datasets in the native layouts of Kinetics, Mimetics and NTU RGB+D.

Videos of rendered articulated figures performing class-specific motions over class-specific
(in-context) or random (out-of-context) scenes, with the exact ground-truth poses of what was
drawn. See :mod:`pipeline.synth.dataset` for the layout and :mod:`pipeline.synth.render` for the
geometry. ``pipeline synth`` (:mod:`pipeline.synth.cli`) is the command line.
"""

from pipeline.synth.dataset import (
    DATASETS,
    ClassSpec,
    PlannedVideo,
    SynthError,
    class_table,
    format_summary,
    make_dataset,
    plan_dataset,
)
from pipeline.synth.motions import MOTION_NAMES
from pipeline.synth.render import RenderedVideo, VideoSpec, render_video

__all__ = [
    "DATASETS",
    "MOTION_NAMES",
    "ClassSpec",
    "PlannedVideo",
    "RenderedVideo",
    "SynthError",
    "VideoSpec",
    "class_table",
    "format_summary",
    "make_dataset",
    "plan_dataset",
    "render_video",
]
