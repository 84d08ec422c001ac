"""The mediapipe pose backend on real footage, its model bundle, its tracker, and the factory.

Real videos come from tests/data/real (see its README); a missing folder is a failure, not a
skip. Frames are subsampled to keep the module near 40 s on one core.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import cv2
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.pose import PoseActor, create_estimator, make_pose_actor_class, resources
from pipeline.pose.base import PoseEstimator, pack_per_frame
from pipeline.pose.mediapipe_backend import (
    BLAZEPOSE_TO_COCO17,
    BUNDLE_NAME,
    MediapipePoseEstimator,
    build_bundle,
    default_bundle_path,
    ensure_bundle,
    landmarks_to_keypoints,
)
from pipeline.pose.tracking import PoseTracker, pose_distance, track_poses
from pipeline.skeletons import get_layout

REAL = Path(__file__).resolve().parent / "data" / "real"
REPO = Path(__file__).resolve().parents[1]
L_SHOULDER, R_SHOULDER, L_HIP, R_HIP = 5, 6, 11, 12


def real_video(name: str) -> Path:
    path = REAL / name
    if not path.is_file():
        pytest.fail(f"{path} is missing from the checkout (tests/data/real)")
    return path


def read_frames(name: str, step: int = 1, size: tuple[int, int] | None = None) -> np.ndarray:
    import decord

    reader = decord.VideoReader(str(real_video(name)))
    frames = reader.get_batch(list(range(0, len(reader), step))).asnumpy()
    if size is not None:
        # INTER_AREA at an integer factor keeps pixel centres aligned (x_small = (x + 0.5) / k -
        # 0.5), which the coordinate test relies on.
        frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
    return frames


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("integralaction-cache")


@pytest.fixture(scope="module")
def estimator(cache_dir: Path) -> MediapipePoseEstimator:
    est = create_estimator("mediapipe", cache_dir=cache_dir)
    assert isinstance(est, MediapipePoseEstimator)
    return est


def present(keypoints: np.ndarray) -> np.ndarray:
    """[F, P] True where a person slot holds a pose."""
    return (keypoints[..., 2] > 0).any(axis=-1)


def check_output(keypoints: np.ndarray, num_frames: int) -> None:
    assert keypoints.dtype == np.float32
    assert keypoints.ndim == 4 and keypoints.shape[0] == num_frames
    assert keypoints.shape[2:] == (17, 3)
    assert keypoints.shape[1] <= 5
    assert np.isfinite(keypoints).all()
    assert ((keypoints[..., 2] >= 0) & (keypoints[..., 2] <= 1)).all()
    # Absent persons are all zeros, not just zero-score.
    absent = ~present(keypoints)
    assert (keypoints[absent] == 0).all()
    if keypoints.shape[1]:
        # P = most persons in any frame (never a slot that is empty throughout).
        assert present(keypoints).any(axis=0).all()


# --- the model bundle -------------------------------------------------------------------------


def test_bundle_builds_from_scratch_into_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("INTEGRALACTION_CACHE", str(tmp_path / "envcache"))
    expected = tmp_path / "envcache" / "mediapipe" / BUNDLE_NAME
    assert default_bundle_path() == expected
    assert default_bundle_path(tmp_path / "arg") == tmp_path / "arg" / "mediapipe" / BUNDLE_NAME
    assert not expected.exists()

    path = ensure_bundle()
    assert path == expected and path.is_file()
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["pose_detector.tflite", "pose_landmarks_detector.tflite"]
        members = {name: zf.read(name) for name in zf.namelist()}
    # Each model carries the input normalisation the Tasks API needs, and all its outputs.
    from mediapipe.tasks.python.metadata import metadata

    expected_md = {
        "pose_detector.tflite": ([127.5], [127.5], 2),
        "pose_landmarks_detector.tflite": ([0.0], [255.0], 5),
    }
    for name, (mean, std, outputs) in expected_md.items():
        md = metadata.MetadataDisplayer.with_model_buffer(members[name]).get_metadata_json()
        graph = json.loads(md)["subgraph_metadata"][0]
        norm = graph["input_tensor_metadata"][0]["process_units"][0]["options"]
        assert (norm["mean"], norm["std"]) == (mean, std), name
        assert len(graph["output_tensor_metadata"]) == outputs, name
    assert [p.name for p in path.parent.iterdir()] == [BUNDLE_NAME]  # no temp files left

    # Present and valid: reused, not rebuilt.
    stamp = path.stat().st_mtime_ns
    assert ensure_bundle() == path and path.stat().st_mtime_ns == stamp
    # A truncated file is replaced.
    path.write_bytes(b"not a zip")
    assert zipfile.is_zipfile(ensure_bundle())


def test_concurrent_builds_leave_one_valid_bundle(tmp_path: Path) -> None:
    target = tmp_path / "shared" / BUNDLE_NAME
    code = (
        f"from pipeline.pose.mediapipe_backend import build_bundle; build_bundle({str(target)!r})"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-2000:]
    with zipfile.ZipFile(target) as zf:
        assert zf.testzip() is None and len(zf.namelist()) == 2
    assert [p.name for p in target.parent.iterdir()] == [BUNDLE_NAME]
    # The same recipe gives the same models (only zip timestamps differ), so whichever rename
    # wins does not matter.
    again = build_bundle(tmp_path / "again" / BUNDLE_NAME)
    with zipfile.ZipFile(target) as za, zipfile.ZipFile(again) as zb:
        assert all(za.read(n) == zb.read(n) for n in za.namelist())


# --- conversion -------------------------------------------------------------------------------


def test_landmarks_map_to_coco17_pixels() -> None:
    lms = [
        types.SimpleNamespace(x=i / 40, y=1 - i / 40, visibility=i / 33, presence=1.0)
        for i in range(33)
    ]
    kp = landmarks_to_keypoints(lms, width=340, height=256)
    assert kp.shape == (17, 3) and kp.dtype == np.float32
    idx = BLAZEPOSE_TO_COCO17
    np.testing.assert_allclose(kp[:, 0], idx / 40 * 340, rtol=1e-6)
    np.testing.assert_allclose(kp[:, 1], (1 - idx / 40) * 256, rtol=1e-6)
    np.testing.assert_allclose(kp[:, 2], idx / 33, rtol=1e-6)
    # BlazePose's left/right joints go to coco17's left/right joints.
    names = get_layout("coco17").names
    blaze = {0: "nose", 2: "left_eye", 5: "right_eye", 7: "left_ear", 8: "right_ear"}
    blaze |= {11: "left_shoulder", 12: "right_shoulder", 13: "left_elbow", 14: "right_elbow"}
    blaze |= {15: "left_wrist", 16: "right_wrist", 23: "left_hip", 24: "right_hip"}
    blaze |= {25: "left_knee", 26: "right_knee", 27: "left_ankle", 28: "right_ankle"}
    assert [blaze[int(i)] for i in idx] == list(names)


def test_pixel_convention_matches_across_scales(estimator: MediapipePoseEstimator) -> None:
    # The same frames at 480x270 and 4x larger: with pixel centres at integers a point maps as
    # x_big = (x + 0.5) * 4 - 0.5. Measured mean offsets with the backend's convention are
    # within 0.1 px; with x_norm * W - 0.5 they would be about -0.375 px (docs/pose.md).
    small = read_frames("two_people_1080p.mp4", step=3, size=(480, 270))
    big = np.stack([cv2.resize(f, (1920, 1080), interpolation=cv2.INTER_LINEAR) for f in small])
    a = estimator.estimate_per_frame(small)
    b = estimator.estimate_per_frame(big)
    diffs = []
    for pa, pb in zip(a, b, strict=True):
        pb = pb.copy()
        pb[..., :2] = (pb[..., :2] + 0.5) / 4 - 0.5
        for pose in pa:
            if len(pb) == 0:
                continue
            other = min(pb, key=lambda q, p=pose: pose_distance(p, q))
            both = (pose[:, 2] > 0.5) & (other[:, 2] > 0.5)
            diffs.append(pose[both, :2] - other[both, :2])
    d = np.concatenate(diffs)
    assert len(d) > 200
    assert np.median(np.abs(d)) < 1.0  # same scale, x and y not swapped
    d = d[np.abs(d).max(axis=1) < 3]  # the odd mismatched joint would swamp a mean
    assert np.abs(d.mean(axis=0)).max() < 0.25, d.mean(axis=0)


# --- real footage -----------------------------------------------------------------------------


def test_arm_wrestling_people_found_on_plausible_bodies(estimator: MediapipePoseEstimator) -> None:
    frames = read_frames("arm_wrestling.mp4", step=2)
    kp = estimator.estimate(frames)
    check_output(kp, len(frames))
    height, width = frames.shape[1:3]
    # Measured: a person in 79 % of the kept frames.
    assert present(kp).any(axis=1).mean() > 0.6
    conf = kp[..., 2] > 0.5
    x, y = kp[..., 0][conf], kp[..., 1][conf]
    inside = (x >= -0.5) & (x < width - 0.5) & (y >= -0.5) & (y < height - 0.5)
    assert inside.mean() > 0.8  # measured 0.88
    # Upright bodies: shoulders above hips, nose above the shoulders (measured 86 % and 90 %).
    both = conf[..., [L_SHOULDER, R_SHOULDER, L_HIP, R_HIP]].all(axis=-1)
    shoulders = kp[..., [L_SHOULDER, R_SHOULDER], 1].mean(axis=-1)
    hips = kp[..., [L_HIP, R_HIP], 1].mean(axis=-1)
    assert both.sum() >= 20 and (shoulders < hips)[both].mean() > 0.75
    nose = conf[..., 0] & conf[..., [L_SHOULDER, R_SHOULDER]].all(axis=-1)
    assert nose.sum() >= 20 and (kp[..., 0, 1] < shoulders)[nose].mean() > 0.75
    # The handheld camera makes most of this clip "move" (a stabilised difference mask covers
    # 60-80 % of it), so the moving-region check is on the fixed-camera clip below.


def test_keypoints_fall_where_people_move(estimator: MediapipePoseEstimator) -> None:
    # two_people_1080p is filmed from a fixed camera: pixels that change between neighbouring
    # frames are the people. Measured: the dilated mask covers 12 % of the frame and holds 91 %
    # of the confident keypoints (72 % if the poses are mirrored).
    frames = read_frames("two_people_1080p.mp4", step=2, size=(480, 270))
    kp = estimator.estimate(frames)
    check_output(kp, len(frames))
    assert present(kp).any(axis=1).mean() > 0.9
    gray = frames.astype(np.int16).mean(axis=-1)
    kernel = np.ones((25, 25), np.uint8)
    masks = []
    for t in range(len(gray)):
        near = [np.abs(gray[t] - gray[s]) for s in (t - 1, t + 1) if 0 <= s < len(gray)]
        diff = np.maximum.reduce(near)
        masks.append(cv2.dilate((diff > 10).astype(np.uint8), kernel) > 0)
    masks = np.stack(masks)
    assert masks.mean() < 0.25
    f, p, j = np.nonzero(kp[..., 2] > 0.5)
    xs = np.clip(np.round(kp[f, p, j, 0]).astype(int), 0, frames.shape[2] - 1)
    ys = np.clip(np.round(kp[f, p, j, 1]).astype(int), 0, frames.shape[1] - 1)
    assert len(f) > 300
    assert masks[f, ys, xs].mean() > 0.8


def test_several_people_in_the_gym(estimator: MediapipePoseEstimator) -> None:
    frames = read_frames("basketball_gym_multi.mp4", step=4)
    kp = estimator.estimate(frames)
    check_output(kp, len(frames))
    counts = present(kp).sum(axis=1)
    # Measured on all 300 frames: 0:62 1:123 2:106 3:9 persons per frame.
    assert kp.shape[1] >= 2 and (counts >= 2).sum() >= 5
    # Two persons of one frame are different people, not one pose twice.
    for f in np.nonzero(counts >= 2)[0]:
        a, b = kp[f, present(kp)[f]][:2]
        assert pose_distance(a, b) > 0.1


def test_no_body_footage_gives_no_person(estimator: MediapipePoseEstimator) -> None:
    # closeup_face.avi (320x240, estimated at that size): a face filling the frame. The
    # landmarker still reports a "person" in almost every frame (face and shoulders, with hips,
    # knees and ankles off-image at visibility ~0); no full body is claimed, and the
    # plausibility rules drop it (docs/pose.md, "Plausible persons").
    frames = read_frames("closeup_face.avi", step=4)
    height, width = frames.shape[1:3]
    per_frame = estimator.estimate_per_frame(frames)
    raw = track_poses(per_frame, num_joints=17)
    check_output(raw, len(frames))
    assert present(raw).any(axis=1).mean() > 0.9  # measured 81 of 82 frames at stride 2
    legs = raw[..., 11:17, :]
    visible = (legs[..., 2] > 0.5) & (legs[..., 0] >= 0) & (legs[..., 0] < width)
    visible &= (legs[..., 1] >= 0) & (legs[..., 1] < height)
    assert visible.all(axis=-1).mean() < 0.05
    kp = estimator.estimate(frames)
    check_output(kp, len(frames))
    assert present(kp).any(axis=1).mean() <= 0.2  # measured 0 at stride 2
    np.testing.assert_array_equal(
        kp, track_poses(estimator.plausible(per_frame, (height, width)), num_joints=17)
    )

    # pool_partial_person.mp4: a pool with a person's legs now and then. Many frames are empty;
    # in most others the landmarker fits a whole tiny body (face and shoulders included,
    # visibility near 1) onto the feet. The rules drop the smallest of them (box under 1/8 of
    # the frame's short side) and those without confident body joints in the frame.
    frames = read_frames("pool_partial_person.mp4", step=5)
    per_frame = estimator.estimate_per_frame(frames)
    raw = track_poses(per_frame, num_joints=17)
    check_output(raw, len(frames))
    empty = ~present(raw).any(axis=1)
    assert empty.mean() > 0.1  # measured 27 % on all frames
    assert (raw[empty] == 0).all()
    height = frames.shape[1]
    heights = []
    for pose in raw[present(raw)]:
        seen = pose[pose[:, 2] > 0.5]
        heights.append(np.ptp(seen[:, 1]) / height if len(seen) >= 3 else 0.0)
    assert np.mean(np.array(heights) < 1 / 3) > 0.9  # measured 99 %, median 0.11 of the frame
    kept = estimator.plausible(per_frame, frames.shape[1:3])
    assert sum(map(len, kept)) < sum(map(len, per_frame))
    for poses in kept:
        for pose in poses:
            seen = pose[(pose[:, 2] >= 0.5)]
            assert np.ptp(seen[:, :2], axis=0).max() >= 256 / 8


def test_empty_input(estimator: MediapipePoseEstimator) -> None:
    out = estimator.estimate(np.zeros((0, 64, 48, 3), np.uint8))
    assert out.shape == (0, 0, 17, 3) and out.dtype == np.float32
    out = estimator.estimate(np.zeros((3, 64, 48, 3), np.uint8))  # black frames: nobody
    assert out.shape == (3, 0, 17, 3)
    with pytest.raises(ValueError, match="uint8"):
        estimator.estimate(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[F, H, W, 3\]"):
        estimator.estimate(np.zeros((8, 8, 3), np.uint8))


def test_results_do_not_depend_on_earlier_videos(
    estimator: MediapipePoseEstimator, cache_dir: Path
) -> None:
    clip = read_frames("arm_wrestling.mp4", step=2)[:20]
    other = read_frames("basketball_gym_multi.mp4", step=2)[:10]
    first = estimator.estimate(clip)
    assert present(first).any()
    again = estimator.estimate(clip)
    estimator.estimate(other)
    after_other = estimator.estimate(clip)
    fresh = MediapipePoseEstimator(cache_dir=cache_dir).estimate(clip)
    for result in (again, after_other, fresh):
        np.testing.assert_array_equal(result, first)


REUSE_ORDER = (
    "arm_wrestling.mp4",
    "basketball_gym_multi.mp4",
    "closeup_face.avi",
    "pool_partial_person.mp4",
    "two_people_1080p.mp4",
    "pool_partial_person.mp4",
    "closeup_face.avi",
    "basketball_gym_multi.mp4",
    "arm_wrestling.mp4",
)


def _clip(name: str) -> np.ndarray:
    # Source size, as the build gives them (two_people_1080p: at a stored-like 480x270).
    size = (480, 270) if name.startswith("two_people") else None
    return read_frames(name, step=4, size=size)[:12]


def test_reused_landmarker_equals_a_fresh_one_per_video(cache_dir: Path) -> None:
    # The Tasks API has no reset call: the estimator keeps one landmarker and clears it between
    # videos with a black frame. Over the real clips in two orders, every video's raw poses are
    # bit-identical to those of a fresh landmarker made for that video alone.
    clips = {name: _clip(name) for name in set(REUSE_ORDER)}
    fresh_est = MediapipePoseEstimator(cache_dir=cache_dir, reuse_landmarker=False)
    fresh = {name: fresh_est.estimate_per_frame(frames) for name, frames in clips.items()}
    assert fresh_est.landmarkers_created == len(clips)
    reused = MediapipePoseEstimator(cache_dir=cache_dir)
    for name in REUSE_ORDER:
        got = reused.estimate_per_frame(clips[name])
        assert len(got) == len(fresh[name])
        for a, b in zip(got, fresh[name], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)
    assert reused.landmarkers_created == 1

    # The comparison is sharp: without the black frame, a reused landmarker carries the
    # previous video's state into the next one, and the poses differ.
    plain = MediapipePoseEstimator(cache_dir=cache_dir)
    plain._runner = plain._new_runner()
    timestamp, differs = 0, []
    for name in REUSE_ORDER:
        frames = clips[name]
        height, width = frames.shape[1:3]
        got = []
        start = timestamp + 2000  # the same gap and frame times as the estimator's
        for i, frame in enumerate(frames):
            timestamp = start + int(round(i * plain.frame_interval_ms))
            lms = plain._detect(frame, timestamp)
            got.append([landmarks_to_keypoints(lm, width, height) for lm in lms])
        differs.append(
            any(
                len(a) != len(b) or not np.array_equal(np.reshape(a, (-1, 17, 3)), b)
                for a, b in zip(got, fresh[name], strict=True)
            )
        )
    plain.close()
    assert any(differs), differs


def test_a_landmarker_that_sees_someone_in_black_is_replaced(cache_dir: Path, monkeypatch) -> None:
    est = MediapipePoseEstimator(cache_dir=cache_dir)
    clip = _clip("arm_wrestling.mp4")[:4]
    first = est.estimate(clip)
    assert est.landmarkers_created == 1
    est.estimate(clip)
    assert est.landmarkers_created == 1
    real_detect = est._detect

    def phantom_on_black(frame: np.ndarray, timestamp: int) -> list:
        found = real_detect(frame, timestamp)
        return found or (["phantom"] if not frame.any() else [])

    monkeypatch.setattr(est, "_detect", phantom_on_black)
    again = est.estimate(clip)
    assert est.landmarkers_created == 2
    np.testing.assert_array_equal(again, first)


def test_single_person_fallback(cache_dir: Path) -> None:
    est = create_estimator("mediapipe", multi_person=False, cache_dir=cache_dir)
    assert est.bundle_path is None  # the legacy solution needs no bundle
    frames = read_frames("two_people_1080p.mp4", step=4, size=(480, 270))
    kp = est.estimate(frames)
    check_output(kp, len(frames))
    assert kp.shape[1] == 1 and present(kp).mean() > 0.9
    np.testing.assert_array_equal(est.estimate(frames), kp)


# --- tracking ---------------------------------------------------------------------------------


def _pose(cx: float, cy: float, size: float = 40.0, score: float = 0.9) -> np.ndarray:
    """A 17-joint stick figure centred at (cx, cy)."""
    rng = np.random.default_rng(0)  # the same figure every time
    offsets = rng.uniform(-size / 2, size / 2, (17, 2))
    pose = np.empty((17, 3), np.float32)
    pose[:, :2] = offsets + (cx, cy)
    pose[:, 2] = score
    return pose


def test_tracker_follows_people_when_the_backend_reorders_them() -> None:
    # A moves right with a score flickering between 0.95 and 0.55; B moves left at 0.7. The
    # backend lists them in a different order every frame, and per-frame score order swaps them
    # every frame too; tracks must not.
    frames = []
    for t in range(12):
        a = _pose(50 + 2 * t, 60, score=0.95 if t % 2 else 0.55)
        b = _pose(200 - 2 * t, 60, score=0.7)
        frames.append(np.stack([a, b] if t % 3 else [b, a]))
    kp = track_poses(frames, num_joints=17)
    assert kp.shape == (12, 2, 17, 3)
    # Slot 0 is A (higher total score), moving right in every frame; slot 1 is B.
    assert (np.diff(kp[:, 0, :, 0].mean(axis=1)) > 0).all()
    assert (np.diff(kp[:, 1, :, 0].mean(axis=1)) < 0).all()
    np.testing.assert_allclose(kp[:, 1, :, 2], 0.7)
    # Score order (the untracked packing) would jump between the two people.
    untracked = pack_per_frame(frames, 17)
    assert not (np.diff(untracked[:, 0, :, 0].mean(axis=1)) > 0).all()


def test_tracker_bridges_gaps_and_ends_stale_tracks() -> None:
    tracker = PoseTracker(max_missed=2)
    seq = [[_pose(50, 50)], [], [], [_pose(52, 50)], [], [], [], [_pose(54, 50)]]
    ids = [tracker.update(np.array(p, np.float32).reshape(-1, 17, 3)) for p in seq]
    assert ids[0] == ids[3] == [0]  # a 2-frame gap is bridged
    assert ids[7] == [1]  # a 3-frame gap ends the track
    out = tracker.result(17, max_persons=5)
    # One slot: the second track starts after the first ended, so it reuses the slot.
    assert out.shape == (8, 1, 17, 3)
    assert present(out)[:, 0].tolist() == [True, False, False, True, False, False, False, True]
    no_reuse = tracker.result(17, max_persons=5, reuse_slots=False)
    assert present(no_reuse)[:, 0].sum() == 2  # the shorter track is dropped


def test_tracker_drops_duplicates_and_caps_persons() -> None:
    base = _pose(100, 100)
    twin = base.copy()
    twin[:, :2] += 1.0  # the same person reported twice
    twin[:, 2] = 0.5
    kp = track_poses([np.stack([twin, base])], num_joints=17)
    assert kp.shape == (1, 1, 17, 3)
    np.testing.assert_array_equal(kp[0, 0], base)

    crowd = np.stack([_pose(60 * i, 50, score=0.3 + 0.1 * i) for i in range(7)])
    kp = track_poses([crowd, crowd], num_joints=17, max_persons=5)
    assert kp.shape == (2, 5, 17, 3)
    # The five best tracks by total score, best first.
    np.testing.assert_allclose(kp[0, :, 0, 2], [0.9, 0.8, 0.7, 0.6, 0.5], rtol=1e-6)


# --- factory, actor, resources ----------------------------------------------------------------


def test_factory_errors(monkeypatch) -> None:
    with pytest.raises(ValueError, match="unknown pose backend 'openpose'"):
        create_estimator("openpose")
    with pytest.raises(ValueError, match="unknown option.*num_people"):
        create_estimator("mediapipe", num_people=3)
    with pytest.raises(ValueError, match="num_poses"):
        create_estimator("mediapipe", num_poses=9)
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # as if it were not installed
    with pytest.raises(ImportError) as info:
        create_estimator("mediapipe")
    message = str(info.value)
    assert "pip install 'integralaction[mediapipe]'" in message and "\n" not in message


def test_estimators_satisfy_the_protocol(estimator: MediapipePoseEstimator) -> None:
    assert isinstance(estimator, PoseEstimator)
    assert estimator.layout == "coco17" and estimator.track is True
    assert resources("mediapipe") == {"num_cpus": 1}
    with pytest.raises(ValueError):
        resources("openpose")


def test_pose_actor_in_a_real_ray(estimator: MediapipePoseEstimator, cache_dir: Path) -> None:
    import ray

    clip = read_frames("arm_wrestling.mp4", step=2)[:10]
    local = PoseActor("mediapipe", {"cache_dir": str(cache_dir)})
    assert local.info() == {"backend": "mediapipe", "layout": "coco17", "track": True}
    expected = estimator.estimate(clip)

    started = not ray.is_initialized()
    if started:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=1, include_dashboard=False, configure_logging=False)
    try:
        actor_cls = make_pose_actor_class(**resources("mediapipe"))
        actor = actor_cls.remote("mediapipe", {"cache_dir": str(cache_dir)})
        # One model for many videos, each starting from a fresh state.
        first = ray.get(actor.estimate.remote(clip))
        ray.get(actor.estimate.remote(clip[::-1].copy()))
        second = ray.get(actor.estimate.remote(clip))
        ray.kill(actor)
    finally:
        if started:
            ray.shutdown()
    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(second, expected)


# --- plausible persons ------------------------------------------------------------------------


def _body(x0: float, y0: float, height: float, score: float = 0.9) -> np.ndarray:
    """A standing coco17 body whose joints span ``height`` pixels from (x0, y0) down."""
    # (x, y) as fractions of the height: head at the top, ankles at the bottom.
    shape = [
        (0.15, 0.0), (0.12, -0.02), (0.18, -0.02), (0.08, 0.0), (0.22, 0.0),  # face
        (0.0, 0.18), (0.3, 0.18), (-0.02, 0.38), (0.32, 0.38), (-0.03, 0.55), (0.33, 0.55),
        (0.05, 0.55), (0.25, 0.55), (0.05, 0.78), (0.25, 0.78), (0.05, 1.0), (0.25, 1.0),
    ]  # fmt: skip
    pose = np.empty((17, 3), np.float32)
    pose[:, :2] = np.array(shape) * height + (x0, y0)
    pose[:, 1] -= pose[:, 1].min() - y0
    pose[:, 2] = score
    return pose


def test_person_rules_keep_bodies_and_drop_heads_and_specks() -> None:
    from pipeline.persons import PersonRules, drop_implausible, plausible_persons

    hw = (256, 340)
    body = _body(100, 20, 200)
    assert plausible_persons(body, hw)
    # A face close-up: face and shoulders confident in the frame, the rest below the frame.
    head = _body(40, 10, 1000)
    assert (head[:7, 1] < 256).all() and (head[7:, 1] >= 256).all()
    assert not plausible_persons(head, hw)
    # The same with the lower joints inside the frame but unseen (low visibility).
    head = body.copy()
    head[7:, 2] = 0.2
    assert not plausible_persons(head, hw)
    # A seated person behind a table: shoulders and arms seen, hips and legs hidden.
    seated = body.copy()
    seated[11:, 2] = 0.1
    assert plausible_persons(seated, hw)
    # Too few body joints: shoulders and one elbow.
    few = body.copy()
    few[8:, 2] = 0.0
    assert not plausible_persons(few, hw)
    # Small for the frame: the box's longer side is 1/8 of the short side (32 px) or less.
    assert plausible_persons(_body(100, 20, 32.5), hw)
    assert not plausible_persons(_body(100, 20, 31), hw)
    # A lying person counts by its length.
    lying = _body(100, 100, 60)[:, [1, 0, 2]]
    assert np.ptp(lying[:, 1]) < 32 and plausible_persons(lying, hw)
    # Absent persons (zeros) never pass, with or without the rules.
    assert not plausible_persons(np.zeros((17, 3)), hw)
    assert not plausible_persons(np.zeros((17, 3)), hw, PersonRules(filter_persons=False))
    assert plausible_persons(head, hw, PersonRules(filter_persons=False))
    # Non-finite values are not confident joints.
    nan = body.copy()
    nan[:, 0] = np.nan
    assert not plausible_persons(nan, hw)
    # [F, P, K, 3]: implausible persons become zeros, the others are untouched.
    kp = np.stack([np.stack([body, head]), np.stack([few, seated])])
    out = drop_implausible(kp, hw)
    np.testing.assert_array_equal(out[0, 0], body)
    np.testing.assert_array_equal(out[1, 1], seated)
    assert (out[0, 1] == 0).all() and (out[1, 0] == 0).all()
    np.testing.assert_array_equal(kp[0, 1], head)  # the input is not modified


def test_person_rules_options() -> None:
    from pipeline.persons import PersonRules

    rules, rest = PersonRules.from_options({"min_score": 0.3, "num_poses": 2})
    assert rules == PersonRules(min_score=0.3) and rest == {"num_poses": 2}
    with pytest.raises(ValueError, match="min_score"):
        PersonRules(min_score=2.0)
    with pytest.raises(ValueError, match="min_box_fraction"):
        PersonRules(min_box_fraction=-0.1)
    with pytest.raises(ValueError, match="min_body_joints must be a whole number"):
        PersonRules(min_body_joints="many")
    assert PersonRules(min_score=1) == PersonRules(min_score=1.0)  # one fingerprint
    # Through the factory and the build's fingerprint: the fields are options of their own.
    from pipeline.pose import person_rules

    est = create_estimator("mediapipe", min_box_fraction=0.1, reuse_landmarker=False)
    assert est.person_rules == PersonRules(min_box_fraction=0.1)
    assert person_rules("mediapipe", {"min_box_fraction": 0.1}) == est.person_rules
    assert person_rules("mediapipe") == PersonRules() and person_rules("mmpose") is None
    with pytest.raises(ValueError, match="not both"):
        create_estimator("mediapipe", person_rules=PersonRules(), min_score=0.4)
    with pytest.raises(ValueError, match="unknown option.*min_scor\\b"):
        create_estimator("mediapipe", min_scor=0.4)


@settings(max_examples=200, deadline=None)
@given(
    coords=hnp.arrays(np.int32, (3, 17, 2), elements=st.integers(-40 * 8, 400 * 8)),
    scores=hnp.arrays(np.int32, (3, 17), elements=st.integers(0, 10)),
    factor=st.sampled_from([1, 2, 4]),
)
def test_person_rules_do_not_depend_on_the_frame_scale(coords, scores, factor) -> None:
    # The same poses on a frame k times larger (pixel centres: x_k = (x + 0.5) * k - 0.5) get
    # the same decisions: the rules are a score, a count and fractions of the frame. Coordinates
    # on a 1/8-pixel grid keep the arithmetic exact.
    from pipeline.persons import plausible_persons

    poses = np.zeros((3, 17, 3), np.float32)
    poses[..., :2] = coords / 8.0
    poses[..., 2] = scores / 10.0
    big = poses.copy()
    big[..., :2] = (poses[..., :2] + 0.5) * factor - 0.5
    small_hw, big_hw = (240, 320), (240 * factor, 320 * factor)
    np.testing.assert_array_equal(
        plausible_persons(poses, small_hw), plausible_persons(big, big_hw)
    )
