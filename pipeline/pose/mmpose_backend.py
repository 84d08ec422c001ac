"""mmpose + mmdet backend: top-down multi-person COCO-17 pose, on GPU when there is one.

An mmdet detector finds people in a batch of frames; an mmpose top-down model estimates the
keypoints in each kept box. Everything mmdet/mmpose-specific sits in two adapters,
:func:`_run_detector` and :func:`_run_pose`, which call the libraries' public inference functions
(imported lazily, so this module imports without the optional extra). The estimator accepts
prebuilt models and inference functions, which is how the tests drive it with a stand-in model
(mmcv's compiled ops do not install on the development machines; see docs/pose.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import MAX_PERSONS, check_frames, pack_per_frame, require

__all__ = ["MMPoseEstimator", "select_boxes"]

_EXTRA = "mmpose"
NUM_JOINTS = 17  # COCO-17, the same joint order as pipeline.skeletons "coco17"


def _to_numpy(value: Any) -> np.ndarray:
    """Tensor (any device) or array-like -> numpy; mmdet returns tensors, mmpose arrays."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _run_detector(
    model: Any,
    frames: Sequence[np.ndarray],
    *,
    person_class: int = 0,
    inference_detector: Callable[..., Any] | None = None,
) -> list[np.ndarray]:
    """Detect people in BGR ``frames``: one float32 [N, 5] (x0, y0, x1, y1, score) per frame.

    ``inference_detector(model, list_of_images)`` (mmdet.apis) returns one DetDataSample per
    image, with ``pred_instances.bboxes`` [N, 4] xyxy, ``.scores`` [N] and ``.labels`` [N]; only
    boxes of ``person_class`` are kept.
    """
    if inference_detector is None:
        inference_detector = _apis()["inference_detector"]
    samples = inference_detector(model, list(frames))
    if len(samples) != len(frames):
        raise RuntimeError(f"detector returned {len(samples)} results for {len(frames)} frames")
    out = []
    for sample in samples:
        inst = sample.pred_instances
        bboxes = _to_numpy(inst.bboxes).reshape(-1, 4).astype(np.float32)
        scores = _to_numpy(inst.scores).reshape(-1).astype(np.float32)
        labels = _to_numpy(inst.labels).reshape(-1)
        keep = labels == person_class
        out.append(np.concatenate([bboxes[keep], scores[keep, None]], axis=1))
    return out


def _run_pose(
    model: Any,
    frames: Sequence[np.ndarray],
    boxes: Sequence[np.ndarray],
    *,
    inference_topdown: Callable[..., Any] | None = None,
) -> list[np.ndarray]:
    """Keypoints of every box: one float32 [n, 17, 3] (x, y, score) per frame.

    ``inference_topdown(model, image, bboxes, bbox_format="xyxy")`` (mmpose.apis) runs all boxes
    of an image as one batch and returns one PoseDataSample per box, with
    ``pred_instances.keypoints`` [1, K, 2] and ``.keypoint_scores`` [1, K]. A frame without
    boxes is skipped: given no boxes, mmpose would estimate one pose over the whole image.
    """
    if inference_topdown is None:
        inference_topdown = _apis()["inference_topdown"]
    out = []
    for frame, frame_boxes in zip(frames, boxes, strict=True):
        frame_boxes = np.asarray(frame_boxes, dtype=np.float32).reshape(-1, 5)
        if len(frame_boxes) == 0:
            out.append(np.zeros((0, NUM_JOINTS, 3), dtype=np.float32))
            continue
        samples = inference_topdown(model, frame, frame_boxes[:, :4], bbox_format="xyxy")
        poses = []
        for sample in samples:
            inst = sample.pred_instances
            xy = _to_numpy(inst.keypoints).reshape(-1, NUM_JOINTS, 2)
            score = _to_numpy(inst.keypoint_scores).reshape(-1, NUM_JOINTS, 1)
            poses.append(np.concatenate([xy, score], axis=-1).astype(np.float32))
        stacked = np.concatenate(poses) if poses else np.zeros((0, NUM_JOINTS, 3), np.float32)
        if len(stacked) != len(frame_boxes):
            raise RuntimeError(
                f"pose model returned {len(stacked)} poses for {len(frame_boxes)} boxes"
            )
        out.append(stacked)
    return out


def select_boxes(
    boxes: np.ndarray, score_threshold: float = 0.5, max_persons: int = MAX_PERSONS
) -> np.ndarray:
    """Boxes [N, 5] scoring at least ``score_threshold``, best first, at most ``max_persons``."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 5)
    boxes = boxes[np.isfinite(boxes).all(axis=1) & (boxes[:, 4] >= score_threshold)]
    order = np.argsort(-boxes[:, 4], kind="stable")[:max_persons]
    return boxes[order]


def _apis() -> dict[str, Callable[..., Any]]:
    for module in ("mmengine", "mmcv", "mmdet", "mmpose"):
        require(module, _EXTRA)
    from mmdet.apis import inference_detector, init_detector
    from mmpose.apis import inference_topdown, init_model

    return {
        "init_detector": init_detector,
        "inference_detector": inference_detector,
        "init_model": init_model,
        "inference_topdown": inference_topdown,
    }


@contextlib.contextmanager
def _unsafe_torch_load(enabled: bool) -> Iterator[None]:
    # mmengine 0.10.7 calls torch.load without weights_only, and torch >= 2.6 then refuses
    # OpenMMLab checkpoints (they pickle more than tensors). torch reads this variable on every
    # load, so setting it only around model initialisation keeps the rest of the process safe.
    if not enabled:
        yield
        return
    previous = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = previous


def _default_device() -> str:
    try:
        import torch

        return "cuda:0" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def _existing(path: str | os.PathLike | None, what: str) -> str:
    if path is None:
        raise ValueError(f"the mmpose backend needs {what} (a local path)")
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return str(path)


class MMPoseEstimator:
    """Top-down multi-person pose: mmdet person boxes, then an mmpose COCO-17 model.

    Options:
      det_config, det_checkpoint, pose_config, pose_checkpoint: local paths (nothing is
        downloaded); or pass built models as ``detector`` / ``pose_model``.
      device: "cuda:0" when torch sees a GPU, else "cpu".
      det_batch_size: frames per detector call; the pose model then runs on all kept boxes of
        each frame of that batch.
      det_score_threshold, person_class, max_persons: box filter (class, score, top-k by score).
      trust_checkpoints: load the checkpoints with torch's full unpickler (needed with
        torch >= 2.6 and mmengine 0.10.7; only for checkpoints you trust).
      inference_detector, inference_topdown: replacements for mmdet's / mmpose's functions of
        those names (same signatures); used by the tests' stand-in model.
    Output persons are in per-frame order of mean keypoint score (``track`` is False).
    """

    layout = "coco17"
    track = False

    def __init__(
        self,
        det_config: str | os.PathLike | None = None,
        det_checkpoint: str | os.PathLike | None = None,
        pose_config: str | os.PathLike | None = None,
        pose_checkpoint: str | os.PathLike | None = None,
        device: str | None = None,
        det_batch_size: int = 16,
        det_score_threshold: float = 0.5,
        person_class: int = 0,
        max_persons: int = MAX_PERSONS,
        trust_checkpoints: bool = False,
        detector: Any = None,
        pose_model: Any = None,
        inference_detector: Callable[..., Any] | None = None,
        inference_topdown: Callable[..., Any] | None = None,
    ) -> None:
        if det_batch_size < 1:
            raise ValueError(f"det_batch_size must be at least 1; got {det_batch_size}")
        needs_library = (
            detector is None
            or pose_model is None
            or inference_detector is None
            or inference_topdown is None
        )
        apis = _apis() if needs_library else {}
        self.device = device or _default_device()
        with _unsafe_torch_load(trust_checkpoints):
            if detector is None:
                detector = apis["init_detector"](
                    _existing(det_config, "det_config"),
                    _existing(det_checkpoint, "det_checkpoint"),
                    device=self.device,
                )
            if pose_model is None:
                pose_model = apis["init_model"](
                    _existing(pose_config, "pose_config"),
                    _existing(pose_checkpoint, "pose_checkpoint"),
                    device=self.device,
                )
        self.detector = detector
        self.pose_model = pose_model
        self._inference_detector = inference_detector or apis["inference_detector"]
        self._inference_topdown = inference_topdown or apis["inference_topdown"]
        self.det_batch_size = det_batch_size
        self.det_score_threshold = det_score_threshold
        self.person_class = person_class
        self.max_persons = max_persons

    def reset(self) -> None:
        """Nothing to reset: each frame is estimated on its own."""

    def estimate(self, frames: np.ndarray) -> np.ndarray:
        frames = check_frames(frames)
        per_frame: list[np.ndarray] = []
        for start in range(0, len(frames), self.det_batch_size):
            # OpenMMLab pipelines take numpy images as BGR (what mmcv.imread returns).
            batch = [
                np.ascontiguousarray(f[..., ::-1])
                for f in frames[start : start + self.det_batch_size]
            ]
            boxes = _run_detector(
                self.detector,
                batch,
                person_class=self.person_class,
                inference_detector=self._inference_detector,
            )
            boxes = [select_boxes(b, self.det_score_threshold, self.max_persons) for b in boxes]
            per_frame += _run_pose(
                self.pose_model, batch, boxes, inference_topdown=self._inference_topdown
            )
        return pack_per_frame(per_frame, NUM_JOINTS, self.max_persons)
