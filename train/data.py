"""Streaming clips for training and evaluation: shards -> video samples -> clips -> batches.

The stream is a ``webdataset.DataPipeline`` built by :meth:`pipeline.shards.Split.pipeline`
(docs/design.md, "Training"):

  shard list        webdataset's ``ResampledShards`` in training (drawn with replacement, seeded
                    by seed, epoch, rank and worker, so every rank runs as many steps as it is
                    asked for whatever the shard count), every shard once split by rank and
                    worker in evaluation
  -> tar reading    webdataset's ``tarfile_to_samples`` on the aligned rgb/pose/raster shards of
                    each number in lockstep, checked against the index (pipeline.shards.reader);
                    a damaged shard is reported and skipped, not fatal
  -> ``shuffle``    webdataset's bounded shuffle buffer (training)
  -> ``decode``     keypoints, frame indices, metadata and rasters; JPEG frames stay bytes
  -> clips          :func:`clip_stage`: decodes only the frames a clip reads, samples the start(s),
                    applies one crop to frames and keypoints, renders the pose rasters
  -> ``batched``    webdataset's batching with :func:`collate`; every batch carries the errors
                    seen since the previous one
  -> ``with_epoch`` each worker's share of the rank's batches in a training epoch

:class:`ClipDataset` wires it into a ``torch.utils.data.IterableDataset``; :func:`make_loader`
wraps it in a DataLoader with seeded workers.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.errors import InvalidInput
from pipeline.raster import dequantize_raster
from pipeline.shards import (
    SHARD_ERRORS,
    Dataset,
    ErrorLog,
    RasterParams,
    Split,
    decode_pose,
    decode_raster,
    decode_rgb,
    rgb_frame_members,
)
from pipeline.shards.reader import stream_seed
from pipeline.skeletons import get_layout

from . import augment, clips

__all__ = [
    "ClipRecipe",
    "open_split",
    "sibling_split",
    "shard_kinds",
    "video_clips",
    "clip_items",
    "clip_stage",
    "batch_stage",
    "collate",
    "ClipDataset",
    "make_loader",
    "eval_loader",
    "steps_per_epoch",
]


# ----------------------------------------------------------------------------------------------
# Split


def open_split(data_url: str, split: str | None) -> Split:
    """The split ``split`` of the dataset at ``data_url`` (a dataset root or a split folder).

    A split folder names its split; ``split`` is then only a default for the root form.
    """
    dataset = Dataset.open(data_url)
    name = dataset.url_split or split
    if not name:
        raise InvalidInput(f"{data_url}: give a split (the URL is a dataset root)")
    chosen = dataset.split(name)
    chosen.index  # noqa: B018  (reads index.parquet now: a missing split fails here, clearly)
    return chosen


def sibling_split(data: Split, split: str) -> Split | None:
    """Another split of the same dataset, or None when it was not built."""
    other = data.dataset.split(split)
    try:
        other.index  # noqa: B018
    except FileNotFoundError:
        return None
    return other


# ----------------------------------------------------------------------------------------------
# What a model needs from each video


@dataclass(frozen=True)
class ClipRecipe:
    """How to turn one video into model inputs.

    ``rgb`` / ``pose`` are None for a model that does not take that stream. Both clips start at
    the same source frame (paper Table 1).
    """

    rgb: clips.ClipSpec | None
    pose: clips.ClipSpec | None
    input_size: int
    frame_stride: int
    layout: str
    raster: RasterParams = field(default_factory=RasterParams)
    pose_input: str = "keypoints"  # "keypoints": render from augmented keypoints; "raster"
    train: bool = True
    num_clips: int = 1  # test clips per video
    # Pose input crop: "frame" (the RGB crop, the paper's code) or "person" (PoseCompact box).
    pose_crop: str = "frame"
    pose_size: int | None = None  # raster side; None: a quarter of input_size (the paper's)
    # views > 0 (with train=False: every video once, as in evaluation): that many training-
    # augmented clips per video, drawn from (seed, key) alone; for stage-2 feature caches.
    views: int = 0
    seed: int = 0

    @property
    def span(self) -> int:
        return max(s.span for s in (self.rgb, self.pose) if s is not None)

    @property
    def pose_side(self) -> int:
        return self.pose_size if self.pose_size is not None else self.input_size // 4


def shard_kinds(recipe: ClipRecipe) -> tuple[str, ...]:
    """Shard kinds a recipe reads: pose-only never downloads RGB, RGB-only never reads pose."""
    kinds = []
    if recipe.rgb is not None:
        kinds.append("rgb")
    if recipe.pose is not None:
        kinds.append("pose")  # keypoints, or the frame indices that rasters are aligned with
        if recipe.pose_input == "raster":
            kinds.append("raster")
    return tuple(kinds)


# ----------------------------------------------------------------------------------------------
# One video -> clips


def _frame_indices(group: dict[str, Any], pose: tuple | None) -> np.ndarray:
    if pose is not None:
        return np.asarray(pose[1], dtype=np.int64)
    return np.asarray([i for i, _ in rgb_frame_members(group)], dtype=np.int64)


def _stored_hw(meta: dict[str, Any] | None, frames: np.ndarray | None, raster) -> tuple[int, int]:
    """The stored frame size: from decoded frames, the raster (x4) or the pose metadata."""
    if frames is not None:
        return int(frames.shape[1]), int(frames.shape[2])
    if raster is not None:
        return int(raster[0].shape[-2]) * 4, int(raster[0].shape[-1]) * 4
    try:
        return int(meta["height"]), int(meta["width"])
    except (TypeError, KeyError) as exc:
        raise KeyError("pose metadata (KEY.json) lacks the stored frame height/width") from exc


def _view_rng(seed: int, key: str) -> np.random.Generator:
    # A video's augmented views depend on (seed, key) only, not on which worker or rank reads
    # it or in which order: a feature cache made on any number of processes is the same.
    digest = hashlib.sha256(key.encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def video_clips(
    key: str,
    group: dict[str, Any],
    recipe: ClipRecipe,
    rng: np.random.Generator | None,
) -> list[dict[str, Any]]:
    """The clips of one video: one random clip in training, ``num_clips`` test clips otherwise,
    or, with ``recipe.views``, that many training-augmented clips drawn from ``(recipe.seed,
    key)`` (what a stage-2 feature cache holds).

    Each clip is a dict with ``rgb`` uint8 [T, 3, S, S] and/or ``pose`` float32
    [T_P, K + 2B, s, s] (s = ``recipe.pose_side``), plus ``key``, ``clip`` (index), ``padded``
    (video shorter than the clip span) and ``has_pose`` (any keypoint above the score
    threshold). Only the JPEG members of the frames the clips read are decoded.
    """
    layout = get_layout(recipe.layout)
    pose = decode_pose(group) if "keypoints.npy" in group else None
    raster = decode_raster(group) if recipe.pose_input == "raster" and recipe.pose else None
    frame_idx = _frame_indices(group, pose)
    first, last, padded = clips.start_range(frame_idx, recipe.span, recipe.frame_stride)
    augmented = recipe.train or recipe.views > 0
    if recipe.views:
        rng = _view_rng(recipe.seed, key)
        starts = [clips.train_start(rng, first, last, recipe.frame_stride)
                  for _ in range(recipe.views)]  # fmt: skip
    elif recipe.train:
        starts = [clips.train_start(rng, first, last, recipe.frame_stride)]
    else:
        starts = clips.test_starts(first, last, recipe.frame_stride, recipe.num_clips)

    rgb_pos = [clips.clip_positions(frame_idx, s, recipe.rgb) for s in starts] if recipe.rgb else []
    frames = None
    if recipe.rgb is not None:
        # Decode each needed frame once, even when test clips overlap.
        needed = np.unique(np.concatenate(rgb_pos))
        frames = decode_rgb(group, frame_idx[needed])
        lookup = {int(p): i for i, p in enumerate(needed)}
        rgb_pos = [np.asarray([lookup[int(p)] for p in pos]) for pos in rgb_pos]
    height, width = _stored_hw(pose[2] if pose else None, frames, raster)

    has_pose = bool(
        pose is not None
        and pose[0].size
        and (np.nan_to_num(pose[0][..., 2]) >= recipe.raster.score_threshold).any()
    )
    out = []
    for i, start in enumerate(starts):
        # Augmented clips draw their crop, then their pose jitter, after all the starts.
        if augmented:
            crop = augment.sample_train_crop(rng, height, width, recipe.input_size)
        else:
            crop = augment.center_crop(height, width, recipe.input_size)
        item: dict[str, Any] = {"key": key, "clip": i, "padded": padded, "has_pose": has_pose}
        if recipe.rgb is not None:
            item["rgb"] = augment.crop_frames(frames[rgb_pos[i]], crop)
        if recipe.pose is not None:
            pos = clips.clip_positions(frame_idx, start, recipe.pose)
            side = recipe.pose_side
            clip_kp = pose[0][pos] if pose is not None else None
            pcrop = augment.pose_crop(
                recipe.pose_crop,
                crop,
                clip_kp,
                recipe.raster.score_threshold,
                side,
                rng if augmented else None,
            )
            if recipe.pose_input == "raster":
                stored = dequantize_raster(raster[0][pos], raster[1][pos])
                r = augment.crop_raster(stored, pcrop, layout, (height, width), side)
            else:
                kp = augment.crop_keypoints(clip_kp, pcrop, layout)
                r = augment.render_pose(kp, layout, side, recipe.raster, side=side)
            item["pose"] = torch.from_numpy(np.ascontiguousarray(r))
        out.append(item)
    return out


def clip_items(
    samples: Iterable[dict[str, Any]],
    recipe: ClipRecipe,
    labels: dict[str, int],
    log: ErrorLog,
    rng: np.random.Generator | None = None,
    skip: frozenset[str] = frozenset(),
) -> Iterator[dict[str, Any]]:
    """Clips of a stream of samples; samples not in ``labels`` or in ``skip`` are passed over.

    A sample that fails to decode (damaged JPEG, missing member) is logged and skipped.
    """
    for sample in samples:
        key = sample["__key__"]
        if key in skip or key not in labels:
            continue
        try:
            items = video_clips(key, sample, recipe, rng)
        except SHARD_ERRORS as exc:
            log.add(f"corrupt sample {key}", exc)
            continue
        for item in items:
            item["label"] = labels[key]
            yield item


def clip_stage(
    recipe: ClipRecipe,
    labels: dict[str, int],
    log: ErrorLog,
    rng: np.random.Generator | None,
    skip: frozenset[str] = frozenset(),
):
    """:func:`clip_items` as a pipeline stage (samples in, clips out)."""

    def stage(samples: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        return clip_items(samples, recipe, labels, log, rng, skip)

    return stage


def collate(
    items: Sequence[dict[str, Any]],
    errors: list[str] | None = None,
    lost: int = 0,
    read: int = 0,
) -> dict[str, Any]:
    """Stack clips into a batch: tensors stacked, the rest as lists / tensors. ``errors``,
    ``lost`` and ``read``: what the reader logged since the last batch, the samples lost with
    it, and the samples it read whole meanwhile."""
    batch: dict[str, Any] = {
        "key": [it["key"] for it in items],
        "clip": torch.tensor([it["clip"] for it in items], dtype=torch.int64),
        "label": torch.tensor([it["label"] for it in items], dtype=torch.int64),
        "padded": torch.tensor([it["padded"] for it in items], dtype=torch.bool),
        "has_pose": torch.tensor([it["has_pose"] for it in items], dtype=torch.bool),
        "errors": list(errors or []),
        "lost": lost,
        "read": read,
    }
    for name in ("rgb", "pose"):
        if items and name in items[0]:
            batch[name] = torch.stack([it[name] for it in items])
    return batch


def batch_stage(batch_size: int, log: ErrorLog, partial: bool = True):
    """webdataset's ``batched`` with :func:`collate`; each batch carries the errors logged since
    the previous one, and leftover errors at the end of a finite stream travel in an empty batch
    (so the main process counts them even when a worker's only shard was unreadable)."""
    import webdataset as wds

    batcher = wds.batched(
        batch_size,
        collation_fn=lambda items: collate(items, *log.drain()),
        partial=partial,
    )

    def stage(items: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        yield from batcher(items)
        if log.pending:
            yield collate([], *log.drain())

    return stage


# ----------------------------------------------------------------------------------------------
# Dataset and loader


def steps_per_epoch(num_samples: int, batch_size: int, world_size: int) -> int:
    """Steps every rank runs per epoch: ceil(videos in the index / global batch)."""
    return max(1, math.ceil(num_samples / (batch_size * world_size)))


class ClipDataset(IterableDataset):
    """Clips of one split for one rank, in batches (use with ``DataLoader(batch_size=None)``).

    Training streams are resampled: call :meth:`set_epoch` before each epoch and take
    ``batches_per_epoch`` batches (each DataLoader worker yields its share, webdataset's
    ``with_epoch``; without it the stream is endless). The stream of (seed, epoch, rank, worker)
    is fixed, so a resumed run sees the same data as an uninterrupted one. Evaluation streams
    end after each worker's share of the shards.
    """

    def __init__(
        self,
        data: Split,
        recipe: ClipRecipe,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 64,
        cache_dir: str | None = None,
        labels: dict[str, int] | None = None,
        skip: Iterable[str] = (),
        batches_per_epoch: int | None = None,
    ) -> None:
        super().__init__()
        self.data = data
        self.labels = labels if labels is not None else data.index.label_of()
        self.recipe = recipe
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle_buffer = shuffle_buffer
        self.cache_dir = cache_dir
        self.skip = frozenset(skip)
        self.batches_per_epoch = batches_per_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        log = ErrorLog()
        train = self.recipe.train
        # Augmentation draws from its own stream of (seed, epoch, rank, worker).
        rng = (
            np.random.default_rng(stream_seed(self.seed, self.epoch, self.rank, worker, 2))
            if train
            else None
        )
        per_worker = None
        if train and self.batches_per_epoch is not None:
            per_worker = max(1, math.ceil(self.batches_per_epoch / workers))
        yield from self.data.pipeline(
            shard_kinds(self.recipe),
            resample=train,
            shuffle=self.shuffle_buffer if train else 0,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,
            world_size=self.world_size,
            cache_dir=self.cache_dir,
            log=log,
            stages=[
                clip_stage(self.recipe, self.labels, log, rng, self.skip),
                batch_stage(self.batch_size, log),
            ],
            batches_per_epoch=per_worker,
        )


def _worker_init(_: int) -> None:
    # Workers share the machine's cores with the training process: one thread each.
    torch.set_num_threads(1)


def make_loader(dataset: ClipDataset, workers: int, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over the dataset's own batches, with ``workers`` processes."""
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=2 if workers else None,
        persistent_workers=False,
    )


def eval_loader(
    data: Split,
    recipe: ClipRecipe,
    batch_size: int,
    *,
    rank: int,
    world_size: int,
    workers: int,
    cache_dir: str | None = None,
    labels: dict[str, int] | None = None,
    skip: Iterable[str] = (),
    pin_memory: bool = False,
) -> DataLoader:
    """The loader of one pass over a split (evaluation, feature caches): every video once,
    its shards split over the ranks and the DataLoader workers."""
    warm_up_renderer(recipe)
    dataset = ClipDataset(
        data,
        recipe,
        batch_size,
        rank=rank,
        world_size=world_size,
        cache_dir=cache_dir,
        labels=labels,
        skip=skip,
    )
    return make_loader(dataset, workers, pin_memory=pin_memory)


def warm_up_renderer(recipe: ClipRecipe) -> None:
    """Compile the numba raster kernels in this process before DataLoader workers fork, so
    that each worker inherits them instead of compiling (or loading) them again each epoch."""
    if recipe.pose is None or recipe.pose_input != "keypoints":
        return
    layout = get_layout(recipe.layout)
    kp = np.zeros((1, 1, layout.num_joints, 3), dtype=np.float32)
    side = max(1, recipe.pose_side)
    augment.render_pose(kp, layout, side, recipe.raster, side=side)


def eval_recipe(recipe: ClipRecipe, num_clips: int) -> ClipRecipe:
    return replace(recipe, train=False, num_clips=num_clips)
