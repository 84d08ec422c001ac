"""Streaming shard loader: shards -> video samples -> clips -> batches (docs/design.md, "Training").

WebDataset-style: a chain of small generator stages, each testable on its own.

  shard numbers      ``resampled_shards`` (training: random with replacement, seeded by seed,
                     epoch, rank and worker, so every rank runs as many steps as it is asked
                     for, whatever the shard count) or ``split_shards`` (evaluation: each shard
                     read by exactly one worker of one rank)
  -> ``read_shards`` opens the aligned rgb/pose/raster tars of each number (local, fsspec URL,
                     or a local cache of the URL), zips them in lockstep and checks the keys;
                     a corrupt or missing shard is reported and skipped, not fatal
  -> ``shuffle``     a bounded shuffle buffer (training)
  -> ``clip_items``  decodes only what the clip reads, samples the start(s), applies one crop to
                     frames and keypoints, renders the pose rasters
  -> ``batched``     stacks clips; every batch carries the errors seen since the previous one

``ClipDataset`` wires the stages into a ``torch.utils.data.IterableDataset``; ``make_loader``
wraps it in a DataLoader with seeded workers.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import random
import tarfile
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline import storage
from pipeline.dataset_info import (
    INDEX_PARQUET,
    DatasetInfo,
    RasterParams,
    load_dataset_info,
    resolve_dataset_root,
)
from pipeline.raster import dequantize_raster
from pipeline.shards import (
    decode_pose,
    decode_raster,
    decode_rgb,
    group_members,
    iter_tar,
    rgb_frame_members,
    shard_name,
)
from pipeline.skeletons import get_layout

from . import augment, clips

__all__ = [
    "SplitIndex",
    "SplitData",
    "ClipRecipe",
    "ShardMismatchError",
    "open_split",
    "read_index",
    "shard_kinds",
    "resampled_shards",
    "split_shards",
    "open_shard",
    "iter_shard_set",
    "read_shards",
    "shuffle",
    "video_clips",
    "clip_items",
    "batched",
    "collate",
    "ClipDataset",
    "make_loader",
    "steps_per_epoch",
]

# What a damaged shard raises while it is read: truncated or garbled tar (TarError, EOFError),
# unreadable file or object (OSError, including missing), bad npz/npy/json (BadZipFile,
# ValueError). Anything else is a bug and propagates.
SHARD_ERRORS: tuple[type[BaseException], ...] = (
    tarfile.TarError,
    EOFError,
    OSError,
    zipfile.BadZipFile,
    ValueError,
    KeyError,
)
# Bytes s3fs fetches per request when streaming a shard: large sequential reads.
REMOTE_BLOCK_SIZE = 16 * 2**20


class ShardMismatchError(RuntimeError):
    """Aligned shards of one number hold different keys: the dataset is inconsistent."""


# ----------------------------------------------------------------------------------------------
# Split: dataset.json + index.parquet


@dataclass
class SplitIndex:
    """The columns of ``index.parquet`` the trainer uses, one entry per video."""

    keys: list[str]
    shards: np.ndarray  # int64 shard number
    labels: np.ndarray  # int64 class index in dataset.json's class list
    num_frames: np.ndarray  # kept frames
    person_fraction: np.ndarray  # fraction of kept frames with a person

    def __len__(self) -> int:
        return len(self.keys)

    def shard_numbers(self) -> list[int]:
        return sorted({int(s) for s in self.shards})

    def label_of(self) -> dict[str, int]:
        return dict(zip(self.keys, (int(x) for x in self.labels), strict=True))


@dataclass
class SplitData:
    """A split of a built dataset: where its shards are, its dataset.json and its index."""

    root: str
    split: str
    url: str
    info: DatasetInfo
    index: SplitIndex


def read_index(split_url: str) -> SplitIndex:
    url = storage.join(split_url, INDEX_PARQUET)
    if not storage.exists(url):
        raise FileNotFoundError(f"no {INDEX_PARQUET} in {split_url}: split missing or not built")
    with storage.open_file(url, "rb") as f:
        table = pq.read_table(
            io.BytesIO(f.read()),
            columns=["key", "shard", "label", "num_frames", "person_fraction"],
        )
    cols = table.to_pydict()
    return SplitIndex(
        keys=[str(k) for k in cols["key"]],
        shards=np.asarray(cols["shard"], dtype=np.int64),
        labels=np.asarray(cols["label"], dtype=np.int64),
        num_frames=np.asarray(cols["num_frames"], dtype=np.int64),
        person_fraction=np.asarray(cols["person_fraction"], dtype=np.float64),
    )


def open_split(data_url: str, split: str | None) -> SplitData:
    """The split ``split`` of the dataset at ``data_url`` (a dataset root or a split folder).

    A split folder names its split; ``split`` is then only a default for the root form.
    """
    root, named = resolve_dataset_root(data_url)
    name = named or split
    if not name:
        raise ValueError(f"{data_url}: give a split (the URL is a dataset root)")
    info = load_dataset_info(root)
    url = storage.join(root, name)
    return SplitData(root=root, split=name, url=url, info=info, index=read_index(url))


def sibling_split(data: SplitData, split: str) -> SplitData | None:
    """Another split of the same dataset, or None when it was not built."""
    url = storage.join(data.root, split)
    if not storage.exists(storage.join(url, INDEX_PARQUET)):
        return None
    return SplitData(data.root, split, url, data.info, read_index(url))


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
# Shard order


def resampled_shards(numbers: Sequence[int], rng: random.Random) -> Iterator[int]:
    """Shard numbers drawn with replacement, forever (training; webdataset's ResampledShards).

    Every worker of every rank can draw from every shard, so a split with fewer shards than
    ranks x workers still feeds them all and no rank runs dry before the others.
    """
    if not numbers:
        raise ValueError("split has no shards")
    while True:
        yield numbers[rng.randrange(len(numbers))]


def split_shards(numbers: Sequence[int], rank: int, world: int, worker: int, workers: int) -> list:
    """The shards one worker of one rank reads in evaluation: every shard exactly once overall.

    Global worker g = rank * workers + worker takes shards g, g + G, g + 2G, ... (G = world *
    workers). Workers without a shard produce nothing; results are gathered by key afterwards.
    """
    g, total = rank * workers + worker, world * workers
    return list(numbers[g::total])


# ----------------------------------------------------------------------------------------------
# Reading shards


def _cache_path(url: str, cache_dir: str) -> str:
    # One folder per split URL (hashed: URLs carry characters that paths should not), readable
    # file names inside.
    parent, _, name = url.rpartition("/")
    tag = hashlib.sha1(parent.encode()).hexdigest()[:16]
    return os.path.join(cache_dir, tag, name)


@contextlib.contextmanager
def open_shard(url: str, cache_dir: str | None = None) -> Iterator[io.BufferedIOBase]:
    """A readable stream of the shard at ``url``.

    Remote shards are streamed with large sequential reads or, with ``cache_dir``, first copied
    there under a temporary name and renamed when complete (concurrent workers may fetch the
    same shard; the last rename wins with identical bytes). A cached copy whose size differs
    from the remote object is fetched again.
    """
    if not storage.is_remote(url):
        with open(storage.strip_protocol(url), "rb") as f:
            yield f
        return
    fs, path = storage.get_fs(url)
    if cache_dir is None:
        with fs.open(path, "rb", block_size=REMOTE_BLOCK_SIZE) as f:
            yield f
        return
    local = _cache_path(url, cache_dir)
    if not (os.path.exists(local) and os.path.getsize(local) == fs.size(path)):
        with storage.atomic_local_target(local) as tmp:
            fs.get_file(path, tmp)
    with open(local, "rb") as f:
        yield f


def iter_shard_set(
    split_url: str, number: int, kinds: Sequence[str], cache_dir: str | None = None
) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, members of every kind) for each sample of shard ``number``, the kinds in lockstep.

    Shards of one number hold the same keys in the same order (shard format v1); a difference
    raises :class:`ShardMismatchError`.
    """
    with contextlib.ExitStack() as stack:
        streams = [
            group_members(
                iter_tar(
                    stack.enter_context(
                        open_shard(storage.join(split_url, shard_name(k, number)), cache_dir)
                    )
                )
            )
            for k in kinds
        ]
        missing = object()
        while True:
            groups = [next(s, missing) for s in streams]
            if all(g is missing for g in groups):
                return
            if any(g is missing for g in groups) or len({g[0] for g in groups}) != 1:
                found = ["<end>" if g is missing else g[0] for g in groups]
                raise ShardMismatchError(
                    f"shard {number:06d} of {split_url}: keys differ across "
                    f"{'/'.join(kinds)}: {found}"
                )
            merged: dict[str, bytes] = {}
            for _, members in groups:
                merged.update(members)
            yield groups[0][0], merged


@dataclass
class ErrorLog:
    """Errors a worker saw since it last handed a batch on (shards and samples skipped)."""

    pending: list[str] = field(default_factory=list)
    _warned: set[str] = field(default_factory=set)

    def add(self, what: str, exc: BaseException) -> None:
        message = f"{what}: {type(exc).__name__}: {exc}"
        self.pending.append(message)
        if what not in self._warned:  # resampling meets a bad shard again and again
            self._warned.add(what)
            warnings.warn(f"skipped {message}", RuntimeWarning, stacklevel=2)

    def drain(self) -> list[str]:
        out, self.pending = self.pending, []
        return out


def read_shards(
    split_url: str,
    numbers: Iterable[int],
    kinds: Sequence[str],
    log: ErrorLog,
    cache_dir: str | None = None,
    max_consecutive_failures: int | None = None,
) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Samples of the given shards in order; a corrupt shard is logged and the rest of it skipped.

    Samples read before the damage are kept. ``max_consecutive_failures`` stops an endless
    resampled stream whose shards are all unreadable.
    """
    failures = 0
    for number in numbers:
        name = f"{split_url.rstrip('/')}/{'+'.join(shard_name(k, number) for k in kinds)}"
        try:
            for key, group in iter_shard_set(split_url, number, kinds, cache_dir):
                failures = 0
                yield key, group
        except SHARD_ERRORS as exc:
            log.add(f"corrupt shard {name}", exc)
            failures += 1
            if max_consecutive_failures is not None and failures > max_consecutive_failures:
                raise RuntimeError(
                    f"{split_url}: {failures} shard reads in a row failed; giving up"
                ) from exc


def shuffle(items: Iterable, size: int, rng: random.Random) -> Iterator:
    """A bounded shuffle buffer (webdataset's ``shuffle``): fill, then emit a random slot."""
    if size <= 1:
        yield from items
        return
    buf: list = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        i = rng.randrange(size)
        yield buf[i]
        buf[i] = item
    rng.shuffle(buf)
    yield from buf


# ----------------------------------------------------------------------------------------------
# One video -> clips


def _frame_indices(group: dict[str, bytes], pose: tuple | None) -> np.ndarray:
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
    group: dict[str, bytes],
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
    samples: Iterable[tuple[str, dict[str, bytes]]],
    recipe: ClipRecipe,
    labels: dict[str, int],
    log: ErrorLog,
    rng: np.random.Generator | None = None,
    skip: frozenset[str] = frozenset(),
) -> Iterator[dict[str, Any]]:
    """Clips of a stream of samples; samples not in ``labels`` or in ``skip`` are passed over.

    A sample that fails to decode (damaged JPEG, missing member) is logged and skipped.
    """
    for key, group in samples:
        if key in skip or key not in labels:
            continue
        try:
            items = video_clips(key, group, recipe, rng)
        except SHARD_ERRORS as exc:
            log.add(f"corrupt sample {key}", exc)
            continue
        for item in items:
            item["label"] = labels[key]
            yield item


def collate(items: Sequence[dict[str, Any]], errors: list[str] | None = None) -> dict[str, Any]:
    """Stack clips into a batch: tensors stacked, the rest as lists / tensors."""
    batch: dict[str, Any] = {
        "key": [it["key"] for it in items],
        "clip": torch.tensor([it["clip"] for it in items], dtype=torch.int64),
        "label": torch.tensor([it["label"] for it in items], dtype=torch.int64),
        "padded": torch.tensor([it["padded"] for it in items], dtype=torch.bool),
        "has_pose": torch.tensor([it["has_pose"] for it in items], dtype=torch.bool),
        "errors": list(errors or []),
    }
    for name in ("rgb", "pose"):
        if items and name in items[0]:
            batch[name] = torch.stack([it[name] for it in items])
    return batch


def batched(
    items: Iterable[dict[str, Any]], batch_size: int, log: ErrorLog, partial: bool = True
) -> Iterator[dict[str, Any]]:
    """Batches of ``batch_size`` clips, each carrying the errors logged since the last batch.

    At the end, leftover errors travel in an empty batch so that the main process counts them
    even when a worker's only shard was unreadable.
    """
    buf: list[dict[str, Any]] = []
    for item in items:
        buf.append(item)
        if len(buf) == batch_size:
            yield collate(buf, log.drain())
            buf = []
    if buf and partial:
        yield collate(buf, log.drain())
    if log.pending:
        yield collate([], log.drain())


# ----------------------------------------------------------------------------------------------
# Dataset and loader


def steps_per_epoch(num_samples: int, batch_size: int, world_size: int) -> int:
    """Steps every rank runs per epoch: ceil(videos in the index / global batch)."""
    return max(1, math.ceil(num_samples / (batch_size * world_size)))


class ClipDataset(IterableDataset):
    """Clips of one split for one rank, in batches (use with ``DataLoader(batch_size=None)``).

    Training streams are endless (resampled shards); take ``steps_per_epoch`` batches and call
    :meth:`set_epoch` before each epoch: the stream of (seed, epoch, rank, worker) is fixed, so
    a resumed run sees the same data as an uninterrupted one. Evaluation streams end after each
    worker's share of the shards.
    """

    def __init__(
        self,
        data: SplitData,
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
    ) -> None:
        super().__init__()
        self.url = data.url
        self.numbers = data.index.shard_numbers()
        self.labels = labels if labels is not None else data.index.label_of()
        self.recipe = recipe
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle_buffer = shuffle_buffer
        self.cache_dir = cache_dir
        self.skip = frozenset(skip)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        log = ErrorLog()
        kinds = shard_kinds(self.recipe)
        if self.recipe.train:
            # One stream per (seed, epoch, rank, worker): reproducible, distinct everywhere.
            seq = np.random.SeedSequence([self.seed, self.epoch, self.rank, worker])
            py_rng = random.Random(int(seq.generate_state(1)[0]))
            np_rng = np.random.default_rng(seq.spawn(1)[0])
            numbers = resampled_shards(self.numbers, py_rng)
            samples = read_shards(
                self.url, numbers, kinds, log, self.cache_dir, 2 * len(self.numbers) + 8
            )
            samples = shuffle(samples, self.shuffle_buffer, py_rng)
            items = clip_items(samples, self.recipe, self.labels, log, np_rng, self.skip)
            yield from batched(items, self.batch_size, log)
        else:
            numbers = split_shards(self.numbers, self.rank, self.world_size, worker, workers)
            samples = read_shards(self.url, numbers, kinds, log, self.cache_dir)
            items = clip_items(samples, self.recipe, self.labels, log, None, self.skip)
            yield from batched(items, self.batch_size, log)


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
