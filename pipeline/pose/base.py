"""The pose estimator interface shared by every backend, and the factory that picks one.

A pose estimator turns the RGB frames of ONE video into keypoints [F, P, K, 3] (x, y, score) in
pixel coordinates of those frames (pixel centres at integers; see docs/pose.md). Each
``estimate`` call is a whole video and starts from a clean state, so a video's keypoints never
depend on the videos an estimator (or the Ray actor holding it) processed before.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..persons import PersonRules

__all__ = [
    "BACKENDS",
    "MAX_PERSONS",
    "PoseEstimator",
    "check_frames",
    "create_estimator",
    "pack_per_frame",
    "person_rules_from_options",
    "require",
]

BACKENDS: tuple[str, ...] = ("mediapipe", "mmpose")
# The shard contract keeps at most 5 persons per frame (docs/design.md, "Pose and rasters").
MAX_PERSONS = 5


@runtime_checkable
class PoseEstimator(Protocol):
    """What the build needs from a pose backend.

    ``layout``: the keypoint layout of the output (``pipeline.skeletons`` name).
    ``track``: True when the person axis follows a track through the video; False when it is
    per-frame score order.
    """

    layout: str
    track: bool

    def estimate(self, frames: np.ndarray) -> np.ndarray:
        """Keypoints float32 [F, P, K, 3] for RGB uint8 frames [F, H, W, 3] of one video.

        Frames are in time order (possibly subsampled). P = min(max_persons, most persons in any
        frame); absent persons are zeros. State is reset at the start of every call.
        """
        ...

    def reset(self) -> None:
        """Drop any per-video state (tracks, landmarker graphs)."""
        ...


def require(module: str, backend: str) -> Any:
    """Import ``module`` for ``backend`` or raise a one-line ImportError naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # also covers a module set to None in sys.modules
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        how = (
            "install it as docs/pose.md says (or use the docker/Dockerfile.gpu image)"
            if backend == "mmpose"
            else f"install it with: pip install 'integralaction[{backend}]'"
        )
        raise ImportError(
            f"pose backend {backend!r} needs the {module!r} package ({reason}); {how}"
        ) from None


def check_frames(frames: np.ndarray) -> np.ndarray:
    """Validate RGB uint8 frames [F, H, W, 3]; return them C-contiguous (mediapipe needs that)."""
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames must be RGB [F, H, W, 3]; got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"frames must be uint8; got {arr.dtype}")
    return np.ascontiguousarray(arr)


def pack_per_frame(
    per_frame: Sequence[np.ndarray], num_joints: int, max_persons: int = MAX_PERSONS
) -> np.ndarray:
    """Stack per-frame poses [n_i, K, 3] into [F, P, K, 3] in per-frame score order.

    Persons are sorted by mean keypoint score (highest first) and cut to ``max_persons``;
    P = min(max_persons, max n_i); missing persons are zeros.
    """
    counts = [len(p) for p in per_frame]
    num_persons = min(max_persons, max(counts, default=0))
    out = np.zeros((len(per_frame), num_persons, num_joints, 3), dtype=np.float32)
    for f, poses in enumerate(per_frame):
        if len(poses) == 0 or num_persons == 0:
            continue
        poses = np.asarray(poses, dtype=np.float32).reshape(-1, num_joints, 3)
        # Stable sort so equal scores keep the backend's order (deterministic output).
        order = np.argsort(-poses[:, :, 2].mean(axis=1), kind="stable")[:num_persons]
        out[f, : len(order)] = poses[order]
    return out


def _backend_class(name: str) -> type:
    if name == "mediapipe":
        from .mediapipe_backend import MediapipePoseEstimator

        return MediapipePoseEstimator
    if name == "mmpose":
        from .mmpose_backend import MMPoseEstimator

        return MMPoseEstimator
    raise ValueError(f"unknown pose backend {name!r}; expected one of {', '.join(BACKENDS)}")


def create_estimator(name: str, **options: Any) -> PoseEstimator:
    """Build the pose estimator ``name`` ("mediapipe" or "mmpose") with backend ``options``.

    Raises ValueError for an unknown backend or option, and ImportError (naming the pip extra)
    when the backend's package is not installed.
    """
    cls = _backend_class(name)
    params = inspect.signature(cls.__init__).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    known = [n for n, p in params.items() if n != "self" and p.kind is not p.VAR_KEYWORD]
    if "person_rules" in params:
        # The rule fields are options of their own (``--pose-option min_score=0.3``).
        rules = person_rules_from_options(options)
        options = {k: v for k, v in options.items() if k not in PersonRules.field_names()}
        options["person_rules"] = rules
        known += PersonRules.field_names()
    unknown = sorted(set(options) - set(known))
    if unknown and not accepts_any:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for pose backend {name!r}; "
            f"expected some of: {', '.join(known)}"
        )
    return cls(**options)


def person_rules_from_options(options: dict[str, Any]) -> PersonRules:
    """The :class:`PersonRules` that backend ``options`` ask for: ``person_rules`` itself, or
    its fields given as options (a one-line ValueError when both are given or a value is bad).
    """
    rules, _ = PersonRules.from_options(options)
    given = options.get("person_rules")
    if given is not None:
        if any(name in options for name in PersonRules.field_names()):
            raise ValueError("give person_rules or its fields as options, not both")
        if not isinstance(given, PersonRules):
            raise ValueError(f"person_rules must be a PersonRules; got {given!r}")
        return given
    return rules
