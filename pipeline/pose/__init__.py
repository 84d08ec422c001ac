"""Pose estimation backends (mediapipe on CPU, mmpose + mmdet on GPU) behind one interface.

``create_estimator(name, **options)`` builds a :class:`PoseEstimator`; the build holds one inside
a Ray actor (:class:`PoseActor`, made remote by :func:`make_pose_actor_class`) so the model is
loaded once per actor and reused for every video. Ray and the backends' packages are imported
only when used.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..persons import PersonRules
from .base import BACKENDS, MAX_PERSONS, PoseEstimator, create_estimator, person_rules_from_options

__all__ = [
    "BACKENDS",
    "MAX_PERSONS",
    "PoseActor",
    "PoseEstimator",
    "create_estimator",
    "make_pose_actor_class",
    "person_rules",
    "resources",
]


class PoseActor:
    """Holds one pose estimator for many videos (wrap with ``ray.remote``).

    Every ``estimate`` call is one video and starts from a fresh tracking state, so results do
    not depend on which videos the actor saw before.
    """

    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        self.name = name
        self.est = create_estimator(name, **(options or {}))

    def estimate(self, frames: np.ndarray) -> np.ndarray:
        return self.est.estimate(frames)

    def info(self) -> dict[str, Any]:
        """What the shard metadata records about the pose source."""
        return {"backend": self.name, "layout": self.est.layout, "track": self.est.track}


def make_pose_actor_class(**actor_options: Any) -> Any:
    """``ray.remote(PoseActor)``; ``actor_options`` (e.g. from :func:`resources`) are applied."""
    import ray

    remote = ray.remote(PoseActor)
    return remote.options(**actor_options) if actor_options else remote


def person_rules(name: str, options: dict[str, Any] | None = None) -> PersonRules | None:
    """The plausibility rules backend ``name`` applies with ``options``; None when it applies
    none (mmpose). The build records them in its fingerprint, so a resume never mixes poses
    made under other rules. Raises ValueError for a bad rule value.
    """
    if name == "mediapipe":
        return person_rules_from_options(options or {})
    if name == "mmpose":
        return None
    raise ValueError(f"unknown pose backend {name!r}; expected one of {', '.join(BACKENDS)}")


def _gpu_available() -> bool:
    # On a running Ray cluster the question is whether any node has a GPU, not this process.
    try:
        import ray

        if ray.is_initialized():
            return ray.cluster_resources().get("GPU", 0) >= 1
    except ImportError:
        pass
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def resources(name: str) -> dict[str, float]:
    """Ray resources a pose actor of backend ``name`` requests.

    mediapipe runs on one CPU core; mmpose takes a whole GPU when the cluster (or, without
    Ray, this machine) has one, else a CPU core.
    """
    if name == "mediapipe":
        return {"num_cpus": 1}
    if name == "mmpose":
        return {"num_gpus": 1} if _gpu_available() else {"num_cpus": 1}
    raise ValueError(f"unknown pose backend {name!r}; expected one of {', '.join(BACKENDS)}")
