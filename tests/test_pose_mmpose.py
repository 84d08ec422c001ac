"""The mmpose backend's batching, box handling and result conversion, with a stand-in model.

Real mmdet/mmpose inference is NOT exercised here: mmcv with compiled ops does not install on
these machines (docs/pose.md). The stand-in below is the only fake in the pose tests. It plays
both models through functions with the signatures of ``mmdet.apis.inference_detector(model,
imgs)`` and ``mmpose.apis.inference_topdown(model, img, bboxes, bbox_format)``, and returns
objects shaped like theirs:

- DetDataSample-like: ``.pred_instances.bboxes`` [N, 4] xyxy, ``.scores`` [N], ``.labels`` [N]
  (torch tensors, as mmdet returns them);
- PoseDataSample-like, one per box: ``.pred_instances.keypoints`` [1, 17, 2] and
  ``.keypoint_scores`` [1, 17] (numpy, as mmpose returns them).

Each test frame carries its index in the red channel and 200 in the blue channel, so the
stand-in knows which frame it was given and can check that it received BGR, as OpenMMLab
pipelines expect. The detector's boxes come from a per-frame script; the pose model puts the 17
keypoints on a diagonal of each box with a score the script chose.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline.pose import PoseActor, PoseEstimator, create_estimator, resources
from pipeline.pose.mmpose_backend import (
    MMPoseEstimator,
    _run_detector,
    _run_pose,
    _unsafe_torch_load,
    select_boxes,
)

PERSON, CHAIR = 0, 56
BLUE_MARK = 200

# A box row in a script: (x0, y0, x1, y1, detector score, label, keypoint score).
Row = tuple[float, float, float, float, float, int, float]


@dataclass
class StandInDetector:
    script: dict[int, list[Row]]
    calls: list[list[int]] = field(default_factory=list)  # frame ids of each call


@dataclass
class StandInPoseModel:
    script: dict[int, list[Row]]
    calls: list[tuple[int, int]] = field(default_factory=list)  # (frame id, boxes)


def frame_id(img: np.ndarray) -> int:
    assert img.ndim == 3 and img.dtype == np.uint8
    assert (img[..., 0] == BLUE_MARK).all(), "the model must get BGR images"
    return int(img[0, 0, 2])


def stand_in_inference_detector(model: StandInDetector, imgs: list[np.ndarray]) -> list:
    assert isinstance(imgs, list)
    ids = [frame_id(img) for img in imgs]
    model.calls.append(ids)
    out = []
    for i in ids:
        rows = np.array([r[:6] for r in model.script.get(i, [])], np.float32).reshape(-1, 6)
        inst = SimpleNamespace(
            bboxes=torch.from_numpy(rows[:, :4]),
            scores=torch.from_numpy(rows[:, 4]),
            labels=torch.from_numpy(rows[:, 5]).long(),
        )
        out.append(SimpleNamespace(pred_instances=inst))
    return out


def stand_in_inference_topdown(
    model: StandInPoseModel, img: np.ndarray, bboxes=None, bbox_format: str = "xyxy"
) -> list:
    assert bbox_format == "xyxy"
    i = frame_id(img)
    if bboxes is None or len(bboxes) == 0:  # what mmpose does: the whole image is one box
        h, w = img.shape[:2]
        bboxes = np.array([[0, 0, w, h]], np.float32)
    model.calls.append((i, len(bboxes)))
    kp_score = {tuple(np.float32(r[:4])): r[6] for r in model.script.get(i, [])}
    out = []
    for box in np.asarray(bboxes, np.float32):
        t = np.linspace(0, 1, 17, dtype=np.float32)[:, None]
        xy = box[:2] + t * (box[2:4] - box[:2])
        score = np.full((1, 17), kp_score.get(tuple(box[:4]), 0.05), np.float32)
        inst = SimpleNamespace(keypoints=xy[None], keypoint_scores=score)
        out.append(SimpleNamespace(pred_instances=inst))
    return out


def make_frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    frames = np.zeros((n, h, w, 3), np.uint8)
    frames[..., 0] = np.arange(n, dtype=np.uint8)[:, None, None]  # red: frame index
    frames[..., 2] = BLUE_MARK
    return frames


def make_estimator(script: dict[int, list[Row]], **options) -> MMPoseEstimator:
    return MMPoseEstimator(
        detector=StandInDetector(script),
        pose_model=StandInPoseModel(script),
        inference_detector=stand_in_inference_detector,
        inference_topdown=stand_in_inference_topdown,
        device="cpu",
        **options,
    )


def box(f: int, k: int, det: float = 0.9, label: int = PERSON, kp: float = 0.8) -> Row:
    """A box unique to frame f and person k."""
    x0, y0 = 100.0 * f + 10.0 * k, float(k)
    return (x0, y0, x0 + 8.0, y0 + 20.0, det, label, kp)


def test_frames_are_batched_and_boxes_routed_to_their_frames() -> None:
    script = {f: [box(f, k) for k in range(f % 3)] for f in range(10)}
    est = make_estimator(script, det_batch_size=4)
    out = est.estimate(make_frames(10))
    assert out.shape == (10, 2, 17, 3) and out.dtype == np.float32
    assert est.detector.calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    # The pose model sees each frame with boxes once, with all of that frame's boxes; frames
    # without boxes are never sent (mmpose would invent a whole-image pose for them).
    assert est.pose_model.calls == [(f, f % 3) for f in range(10) if f % 3]
    for f in range(10):
        for k in range(f % 3):
            x0, y0, x1, y1 = box(f, k)[:4]
            (slot,) = [p for p in range(2) if np.isclose(out[f, p, 0, 0], x0)]
            np.testing.assert_allclose(out[f, slot, 0], [x0, y0, 0.8])
            np.testing.assert_allclose(out[f, slot, -1], [x1, y1, 0.8])
        assert (out[f, f % 3 :] == 0).all()


def test_box_filter_class_threshold_and_top5() -> None:
    rows = [box(0, k, det=0.3 + 0.08 * k, kp=0.5) for k in range(8)]  # det 0.30 .. 0.86
    rows += [box(0, 8, det=0.99, label=CHAIR), box(0, 9, det=0.49)]
    est = make_estimator({0: rows}, det_score_threshold=0.5, max_persons=5)
    out = est.estimate(make_frames(1))
    assert out.shape == (1, 5, 17, 3)
    kept = sorted(int(round(x % 100)) // 10 for x in out[0, :, 0, 0])
    # Persons 3..7 score 0.54 .. 0.86 (0.5 and above); 0..2 are below the threshold, the chair
    # is not a person, and box 9 (0.49) misses the threshold.
    assert kept == [3, 4, 5, 6, 7]
    # Only the kept boxes reach the pose model.
    assert est.pose_model.calls == [(0, 5)]

    boxes = np.array([[0, 0, 1, 1, 0.5], [0, 0, 1, 1, np.nan], [0, 0, 2, 2, 0.7]], np.float32)
    np.testing.assert_allclose(select_boxes(boxes, 0.5, 5)[:, 4], [0.7, 0.5])
    assert select_boxes(np.zeros((0, 5)), 0.5).shape == (0, 5)


def test_persons_sorted_by_mean_keypoint_score_not_detector_score() -> None:
    rows = [box(0, 0, det=0.95, kp=0.3), box(0, 1, det=0.6, kp=0.9), box(0, 2, det=0.7, kp=0.6)]
    out = make_estimator({0: rows}).estimate(make_frames(1))
    np.testing.assert_allclose(out[0, :, :, 2].mean(axis=1), [0.9, 0.6, 0.3])
    np.testing.assert_allclose(out[0, :, 0, 0], [box(0, k)[0] for k in (1, 2, 0)])


def test_empty_frames_and_videos() -> None:
    est = make_estimator({1: [box(1, 0)]})
    out = est.estimate(make_frames(3))
    assert out.shape == (3, 1, 17, 3)
    assert (out[0] == 0).all() and (out[2] == 0).all() and out[1, 0, 0, 2] > 0

    out = make_estimator({}).estimate(make_frames(4))
    assert out.shape == (4, 0, 17, 3) and out.dtype == np.float32
    out = make_estimator({}).estimate(np.zeros((0, 8, 8, 3), np.uint8))
    assert out.shape == (0, 0, 17, 3)


def test_adapters_convert_and_check_counts() -> None:
    det = StandInDetector({0: [box(0, 0), box(0, 1, label=CHAIR)], 1: []})
    frames = [np.ascontiguousarray(f[..., ::-1]) for f in make_frames(2)]
    boxes = _run_detector(det, frames, inference_detector=stand_in_inference_detector)
    assert [b.shape for b in boxes] == [(1, 5), (0, 5)]
    assert boxes[0].dtype == np.float32
    np.testing.assert_allclose(boxes[0][0], [*box(0, 0)[:4], 0.9])

    pose = StandInPoseModel({0: [box(0, 0)]})
    poses = _run_pose(pose, frames, boxes, inference_topdown=stand_in_inference_topdown)
    assert [p.shape for p in poses] == [(1, 17, 3), (0, 17, 3)]

    def drops_one(model, imgs):
        return stand_in_inference_detector(model, imgs)[:-1]

    with pytest.raises(RuntimeError, match="1 results for 2 frames"):
        _run_detector(det, frames, inference_detector=drops_one)


def test_pose_actor_and_protocol() -> None:
    options = {
        "detector": StandInDetector({0: [box(0, 0)]}),
        "pose_model": StandInPoseModel({0: [box(0, 0)]}),
        "inference_detector": stand_in_inference_detector,
        "inference_topdown": stand_in_inference_topdown,
        "device": "cpu",
    }
    actor = PoseActor("mmpose", options)
    assert isinstance(actor.est, PoseEstimator)
    assert actor.info() == {"backend": "mmpose", "layout": "coco17", "track": False}
    assert actor.estimate(make_frames(2)).shape == (2, 1, 17, 3)
    expected = {"num_gpus": 1} if torch.cuda.is_available() else {"num_cpus": 1}
    assert resources("mmpose") == expected


def test_missing_packages_name_the_extra(monkeypatch) -> None:
    for module in ("mmdet", "mmpose"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed (true here anyway)
    with pytest.raises(ImportError) as info:
        create_estimator("mmpose", det_config="d.py", det_checkpoint="d.pth")
    message = str(info.value)
    assert "docs/pose.md" in message and "\n" not in message
    with pytest.raises(ValueError, match="det_batch_size"):
        make_estimator({}, det_batch_size=0)


def test_trusted_checkpoint_loading_is_scoped(monkeypatch) -> None:
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    with _unsafe_torch_load(True):
        assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ
    with _unsafe_torch_load(False):
        assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "0")
    with _unsafe_torch_load(True):
        assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "0"
