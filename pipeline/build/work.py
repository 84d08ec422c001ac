"""The work of one shard: each video decoded, its pose estimated or read, persons selected,
rasters rendered, and the sample written to the aligned shards; then the shard's record.

:func:`build_shard` runs in a Ray task during a build, but needs no Ray: give it a
:class:`LocalPose` (an estimator in this process) or nothing (precomputed poses) and it builds a
shard in the calling process, as benchmarks and other programs do.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from .. import storage
from ..datasets import VideoItem
from ..shards import RasterParams, Sample, ShardSetWriter
from .plan import ShardSpec

__all__ = [
    "BUILD_DIR",
    "ShardContext",
    "ShardRecord",
    "StageError",
    "PoseClient",
    "LocalPose",
    "decode_item",
    "finish_video",
    "build_shard",
    "retry_shard",
    "record_url",
    "root_cause_text",
]

BUILD_DIR = "_build"


@dataclass(frozen=True)
class ShardContext:
    """Everything a shard task needs besides its videos (the same for every shard of a build)."""

    out: str
    frame_stride: int
    short_side: int
    poses_fps: str
    layout: str  # layout of the stored keypoints
    pose: str  # backend name: mediapipe, mmpose or precomputed
    pose_layout: str  # layout the pose source gives
    pose_tracked: bool  # whether the source's person axis follows tracks
    raster: RasterParams = field(default_factory=RasterParams)


@dataclass
class ShardRecord:
    """What a finished shard holds, written to ``OUT/_build/{split}/NNNNNN.json`` after its tars."""

    split: str
    shard: int
    index: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)

    @property
    def keys(self) -> list[str]:
        return [row["key"] for row in self.index]

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, default=_json_default).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ShardRecord:
        raw = json.loads(data)
        raw.pop("keys", None)  # records of earlier versions repeat the keys
        return cls(**raw)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def record_url(out: str, split: str, number: int) -> str:
    return storage.join(out, BUILD_DIR, split, f"{number:06d}.json")


class StageError(Exception):
    """A video that cannot be used, with the stage that failed and the root cause."""

    def __init__(self, stage: str, reason: str):
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


def root_cause_text(exc: BaseException) -> str:
    """The root cause of a failure as errors.parquet stores it (:func:`pipeline.errors.describe`)."""
    from ..errors import describe

    return describe(exc)


class PoseClient(Protocol):
    """Where keypoints come from: ``submit`` a video's frames, later ``result`` its keypoints.

    Submitting before decoding the next video lets a pose actor work while the task decodes.
    """

    def submit(self, frames: np.ndarray) -> Any: ...

    def result(self, handle: Any) -> np.ndarray: ...


class LocalPose:
    """A :class:`PoseClient` over an estimator in this process (no Ray)."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def submit(self, frames: np.ndarray) -> Any:
        return frames

    def result(self, handle: Any) -> np.ndarray:
        return self.estimator.estimate(handle)


@dataclass
class _Pending:
    item: VideoItem
    video: Any  # pipeline.video.DecodedVideo
    pose_handle: Any = None


def decode_item(item: VideoItem, ctx: ShardContext) -> Any:
    """The video's kept frames at the stored size (:class:`pipeline.video.DecodedVideo`)."""
    from ..video import DecodeError, decode_video

    try:
        with storage.local_copy(item.source) as path:
            if not os.path.exists(path):
                raise StageError("read", "video file not found")
            if os.path.getsize(path) == 0:
                raise StageError("decode", "empty file (0 bytes)")
            # Pose models see the source-size frames when the stored ones are upscaled.
            keep_native = ctx.pose in ("mediapipe", "mmpose")
            return decode_video(path, ctx.frame_stride, ctx.short_side, keep_native)
    except StageError:
        raise
    except DecodeError as exc:
        raise StageError("decode", str(exc).splitlines()[0]) from None
    except (OSError, RuntimeError) as exc:
        raise StageError("read", root_cause_text(exc)) from None


def _keypoints(pending: _Pending, ctx: ShardContext, pose: PoseClient | None):
    from ..pose.precomputed import load_precomputed

    video = pending.video
    height, width = video.frames.shape[1:3]
    try:
        if pose is not None:
            # Estimated on video.pose_frames: mapped to stored-frame pixels.
            keypoints = video.pose_to_stored(pose.result(pending.pose_handle))
            return keypoints, ctx.pose_layout, ctx.pose_tracked
        return load_precomputed(
            pending.item,
            kept_indices=video.frame_indices,
            source_frames=video.source_frames,
            fps=video.fps,
            source_hw=(video.source_height, video.source_width),
            stored_hw=(height, width),
            poses_fps=ctx.poses_fps,
        )
    except StageError:
        raise
    except Exception as exc:
        raise StageError("pose", root_cause_text(exc)) from None


def finish_video(
    pending: _Pending, ctx: ShardContext, pose: PoseClient | None
) -> tuple[Sample, dict[str, Any]]:
    """Pose (from the client or a file), layout conversion, person selection, rasters: the sample
    to write and its index row (without ``bytes`` and ``shard``, which the writer knows)."""
    from ..persons import persons_per_frame, select_persons
    from ..raster import render_clip_quantized
    from ..skeletons import convert_keypoints, get_layout

    item, video = pending.item, pending.video
    height, width = video.frames.shape[1:3]
    params = ctx.raster
    keypoints, source_layout, tracked = _keypoints(pending, ctx, pose)
    try:
        layout = get_layout(ctx.layout or source_layout)
        keypoints = convert_keypoints(keypoints, source_layout, layout.name)
        keypoints = select_persons(keypoints, params.max_persons, tracked, params.score_threshold)
        # Straight into the stored dtypes (uint8 heatmaps, int8 PAFs); the values equal
        # quantize_raster(render_clip(...)) exactly (tests/test_raster.py).
        heatmaps, pafs = render_clip_quantized(
            keypoints,
            layout.bones,
            (height // 4, width // 4),
            scale=params.scale,
            sigma=params.sigma,
            paf_width=params.paf_width,
            max_persons=params.max_persons,
            score_threshold=params.score_threshold,
        )
    except Exception as exc:
        raise StageError("raster", root_cause_text(exc)) from None
    with_person = persons_per_frame(keypoints, params.score_threshold) > 0
    person_fraction = float(with_person.mean()) if len(with_person) else 0.0
    meta = {
        "key": item.key,
        "label": item.label,
        "label_name": item.label_name,
        "source": item.source,
        "fps": video.fps,
        "source_frames": video.source_frames,
        "source_height": video.source_height,
        "source_width": video.source_width,
        "height": int(height),
        "width": int(width),
        "layout": layout.name,
        "frame_stride": ctx.frame_stride,
        "person_order": "track" if tracked else "score",
        "num_persons": int(keypoints.shape[1]),
        "decoder": video.decoder,
        "pose": ctx.pose,
        **({"extra": item.extra} if item.extra else {}),
    }
    sample = Sample(item.key, video.frames, video.frame_indices, keypoints, heatmaps, pafs, meta)
    row = {
        "key": item.key,
        "label": item.label,
        "label_name": item.label_name,
        "source": item.source,
        "num_frames": int(len(video.frame_indices)),
        "source_frames": int(video.source_frames),
        "fps": float(video.fps),
        "height": int(height),
        "width": int(width),
        "person_fraction": person_fraction,
        "num_persons": int(keypoints.shape[1]),
    }
    return sample, row


def _error_row(item: VideoItem, err: StageError) -> dict[str, Any]:
    return {"source": item.source, "stage": err.stage, "reason": err.reason, "key": item.key}


def _process(
    item: VideoItem, ctx: ShardContext, pose: PoseClient | None
) -> tuple[Sample, dict[str, Any]]:
    """Decode, pose and rasters of one video, without pipelining (StageError on failure)."""
    pending = _Pending(item, decode_item(item, ctx))
    if pose is not None:
        pending.pose_handle = pose.submit(pending.video.pose_frames)
    return finish_video(pending, ctx, pose)


def _count(record: ShardRecord) -> None:
    stats: Counter[str] = Counter(f"error:{e['stage']}" for e in record.errors)
    stats["samples"] = len(record.index)
    stats["no_person"] = sum(1 for row in record.index if row["person_fraction"] == 0.0)
    record.stats = {k: v for k, v in stats.items() if v}


def _write(
    writer: ShardSetWriter, record: ShardRecord, sample: Sample, row: dict[str, Any]
) -> None:
    """Add a finished video to the shards and its row to the record (StageError "write")."""
    try:
        row["bytes"] = writer.add(sample)
    except Exception as exc:
        raise StageError("write", root_cause_text(exc)) from None
    row["shard"] = record.shard
    record.index.append(row)


def build_shard(
    spec: ShardSpec,
    ctx: ShardContext,
    pose: PoseClient | None = None,
    on_video: Callable[[], None] | None = None,
) -> ShardRecord:
    """Build one shard (all three kinds), write its record, and return it.

    A video that fails at any stage becomes an error row with its root cause; the shard goes on.
    With a pose client, video i's pose is estimated while video i + 1 is decoded.
    ``on_video`` is called once per video done (progress).
    """
    record = ShardRecord(spec.split, spec.number)

    def fail(item: VideoItem, err: StageError) -> None:
        record.errors.append(_error_row(item, err))

    def tick() -> None:
        if on_video is not None:
            on_video()

    with ShardSetWriter(storage.join(ctx.out, spec.split), spec.number) as writer:

        def complete(done: _Pending) -> None:
            try:
                _write(writer, record, *finish_video(done, ctx, pose))
            except StageError as err:
                fail(done.item, err)
            tick()

        pending: _Pending | None = None
        for item in spec.items:
            current: _Pending | None
            try:
                current = _Pending(item, decode_item(item, ctx))
                if pose is not None:
                    current.pose_handle = pose.submit(current.video.pose_frames)
            except StageError as err:
                fail(item, err)
                tick()
                current = None
            if pending is not None:
                complete(pending)
            pending = current
        if pending is not None:
            complete(pending)
        writer.commit()
        record.bytes = dict(writer.bytes)
    _count(record)
    storage.write_bytes_atomic(record_url(ctx.out, spec.split, spec.number), record.to_json())
    return record


def retry_shard(
    spec: ShardSpec,
    ctx: ShardContext,
    previous: ShardRecord,
    pose: PoseClient | None = None,
    on_video: Callable[[], None] | None = None,
) -> ShardRecord:
    """Reprocess only the videos that failed in ``previous`` and rewrite the shard atomically.

    The samples that were written are copied member for member from the existing tars (read
    through the index-checked reader), the failed videos processed again, all in plan order, so
    the shard equals the one a clean build would write now. A video that fails again keeps its
    error row (with the new cause).
    """
    from ..shards import KINDS, ErrorLog, shard_name, split_members
    from ..shards.reader import aligned_samples

    failed = {e["key"] for e in previous.errors}
    rows = {row["key"]: row for row in previous.index}
    split_url = storage.join(ctx.out, spec.split)
    log = ErrorLog()
    # The shard as the record describes it (its row count and each sample's frames).
    old = aligned_samples(
        [{"url": storage.join(split_url, shard_name(KINDS[0], spec.number))}],
        split_url=split_url,
        kinds=KINDS,
        log=log,
        counts={spec.number: len(rows)},
        num_frames={key: row["num_frames"] for key, row in rows.items()},
    )
    record = ShardRecord(spec.split, spec.number)
    with ShardSetWriter(split_url, spec.number) as writer:
        for item in spec.items:
            if item.key in failed:
                try:
                    _write(writer, record, *_process(item, ctx, pose))
                except StageError as err:
                    record.errors.append(_error_row(item, err))
                if on_video is not None:
                    on_video()
                continue
            copied = next(old, None)
            if copied is None or copied["__key__"] != item.key or item.key not in rows:
                found = None if copied is None else copied["__key__"]
                damage = f" ({log.pending[0]})" if log.pending else ""
                raise StageError(
                    "write",
                    f"{split_url}: shard {spec.number:06d} does not hold the samples its record "
                    f"lists ({item.key!r} expected, {found!r} found){damage}; rebuild it with "
                    "--overwrite",
                )
            writer.add_encoded(item.key, split_members(copied))
            record.index.append(rows[item.key])
        writer.commit()
        record.bytes = dict(writer.bytes)
    _count(record)
    storage.write_bytes_atomic(record_url(ctx.out, spec.split, spec.number), record.to_json())
    return record
