"""Stage-2 feature caches: the frozen streams' pooled features, computed once.

In stage 2 the streams are frozen (no gradient, BatchNorm in eval mode, no dropout, the
temporal shift only within a clip), so the features ``F_A [T, C_A]`` and ``F_P [T, C_P]`` of a
clip are a fixed function of the clip. Stage 2 can therefore compute them for N augmented clips
("views") of every training video once, and train the integration head on them
(``train fit --stage integral --cache-features N``): one pass of both streams over N x the
videos instead of one per SGD step. Validation and ``train eval`` can do the same for their
test clips (``--feature-cache DIR``).

A cache file holds one process's share of a split (every video once, split over ranks as in
evaluation) and is named by a key that covers everything the features depend on: both streams'
weights (a digest of their state dicts, i.e. of the stage-1 checkpoints' streams), the index
digest (index.parquet's bytes) and the labels used, the full clip recipe (sizes, lengths,
strides, crop scales, flip, pose crop / size / sigma, raster parameters, views, seed), the
storage dtype, and the rank and number of processes. A change to any of them is a new file.
Files are written under a temporary name and renamed; a lock file keeps two processes from
computing the same cache at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline import storage
from pipeline.errors import InvalidInput
from pipeline.shards import INDEX_PARQUET, Split

from . import augment
from .augment import Normalisation, normalise_rgb
from .data import ClipRecipe, eval_loader
from .distributed import Dist

__all__ = [
    "FORMAT_VERSION",
    "FEATURE_DTYPES",
    "FeatureSet",
    "state_digest",
    "index_digest",
    "cache_key",
    "compute_features",
    "cached_features",
    "feature_batches",
]

FORMAT_VERSION = 2  # 2: a cache records the samples its split could not read (``lost``)
FEATURE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass
class FeatureSet:
    """Pooled stream features of V clips ("views") of N videos (one process's share).

    ``f_a [N, V, T, C_A]`` and ``f_p [N, V, T, C_P]`` in the storage dtype; ``labels`` int64
    [N]; ``padded`` / ``has_pose`` bool [N]; ``keys`` the videos, sorted.
    """

    keys: list[str]
    labels: torch.Tensor
    f_a: torch.Tensor
    f_p: torch.Tensor
    padded: torch.Tensor
    has_pose: torch.Tensor
    errors: list[str] = dataclasses.field(default_factory=list)
    lost: int = 0  # videos of this share the reader could not read (damaged shards)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def views(self) -> int:
        return int(self.f_a.shape[1]) if self.f_a.ndim == 4 else 0

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.f_a, self.f_p))

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSet:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


# ----------------------------------------------------------------------------------------------
# Keys


def state_digest(module: nn.Module) -> str:
    """sha256 of a module's state dict (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def index_digest(data: Split) -> str:
    """sha256 of the split's index.parquet bytes (which videos, their shards and labels)."""
    with storage.open_file(storage.join(data.url, INDEX_PARQUET), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _recipe_record(recipe: ClipRecipe) -> dict[str, Any]:
    record = dataclasses.asdict(recipe)
    # What the training crops draw from, so that a change in augmentation is a new cache.
    record["augment"] = {
        "scales": list(augment.SCALES),
        "max_distort": augment.MAX_DISTORT,
        "flip_prob": 0.5,
        "person_padding": augment.PERSON_PADDING,
        "person_min_side": augment.PERSON_MIN_SIDE,
        "person_scale_jitter": augment.PERSON_SCALE_JITTER,
        "person_shift_jitter": augment.PERSON_SHIFT_JITTER,
    }
    return record


def cache_key(
    net: nn.Module,
    data: Split,
    recipe: ClipRecipe,
    normalisation: Normalisation,
    labels: dict[str, int],
    *,
    dtype: str = "float32",
    rank: int = 0,
    world_size: int = 1,
) -> str:
    """The name of a cache: a digest of everything the cached features depend on."""
    payload = {
        "format": FORMAT_VERSION,
        "appearance": state_digest(net.appearance),
        "pose": state_digest(net.pose),
        "index": index_digest(data),
        "labels": hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest(),
        "recipe": _recipe_record(recipe),
        "normalisation": dataclasses.asdict(normalisation),
        "dtype": dtype,
        "rank": rank,
        "world_size": world_size,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# ----------------------------------------------------------------------------------------------
# Computing


@torch.no_grad()
def compute_features(
    net: nn.Module,
    data: Split,
    recipe: ClipRecipe,
    normalisation: Normalisation,
    dist: Dist,
    *,
    labels: dict[str, int] | None = None,
    skip: frozenset[str] = frozenset(),
    batch_size: int = 16,
    workers: int = 2,
    cache_dir: str | None = None,
    dtype: str = "float32",
    progress=None,
) -> FeatureSet:
    """Pooled stream features of this rank's share of ``data``: every video once, with
    ``recipe.views`` augmented clips (training views) or ``recipe.num_clips`` test clips.

    ``net`` is a stage-2 model (``features(rgb, pose)``); its streams run in eval mode.
    """
    if recipe.train:
        raise ValueError("feature caches read every video once: use views or test clips")
    streams = [m for m in (getattr(net, "appearance", None), getattr(net, "pose", None)) if m]
    modes = [m.training for m in streams]
    for m in streams:
        m.eval()
    labels = labels if labels is not None else data.index.label_of()
    loader = eval_loader(
        data, recipe, batch_size, rank=dist.rank, world_size=dist.world_size, workers=workers,
        cache_dir=cache_dir, labels=labels, skip=skip, pin_memory=dist.device.type == "cuda",
    )  # fmt: skip
    per_video: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    lost = 0
    store = FEATURE_DTYPES[dtype]
    try:
        for batch in loader:
            errors += batch["errors"]
            lost += batch["lost"]
            if not batch["key"]:
                continue
            rgb = normalise_rgb(batch["rgb"].to(dist.device), normalisation)
            pose = batch["pose"].to(dist.device)
            f_a, f_p = net.features(rgb, pose)
            f_a, f_p = f_a.float().cpu().to(store), f_p.float().cpu().to(store)
            for i, key in enumerate(batch["key"]):
                v = per_video.setdefault(
                    key,
                    {
                        "label": int(batch["label"][i]),
                        "padded": bool(batch["padded"][i]),
                        "has_pose": bool(batch["has_pose"][i]),
                        "clips": {},
                    },
                )
                v["clips"][int(batch["clip"][i])] = (f_a[i], f_p[i])
            if progress is not None:
                progress(len(batch["key"]))
    finally:
        for m, mode in zip(streams, modes, strict=True):
            m.train(mode)
    keys = sorted(per_video)
    views = recipe.views or recipe.num_clips
    for key in keys:
        got = sorted(per_video[key]["clips"])
        if got != list(range(views)):
            raise RuntimeError(f"feature cache: video {key} has clips {got}, expected {views}")

    def stack(which: int) -> torch.Tensor:
        if not keys:
            return torch.zeros(0, views, 0, 0, dtype=store)
        return torch.stack(
            [torch.stack([per_video[k]["clips"][c][which] for c in range(views)]) for k in keys]
        )

    return FeatureSet(
        keys=keys,
        labels=torch.tensor([per_video[k]["label"] for k in keys], dtype=torch.int64),
        f_a=stack(0),
        f_p=stack(1),
        padded=torch.tensor([per_video[k]["padded"] for k in keys], dtype=torch.bool),
        has_pose=torch.tensor([per_video[k]["has_pose"] for k in keys], dtype=torch.bool),
        errors=errors,
        lost=lost,
    )


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cached_features(
    folder: str,
    key: str,
    compute,
    *,
    say=print,
    what: str = "features",
) -> tuple[FeatureSet, bool]:
    """``(features, loaded)``: the cache ``folder/key.pt`` if it exists, else ``compute()``,
    written atomically. A lock file makes a second process wait for the first's result."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{key}.pt")
    with _locked(path + ".lock"):
        if os.path.exists(path):
            data = torch.load(path, map_location="cpu", weights_only=False)
            if data.get("format_version") == FORMAT_VERSION:
                feats = FeatureSet.from_dict(data)
                say(f"{what}: {len(feats)} videos x {feats.views} clips from {path}")
                return feats, True
        begin = time.perf_counter()
        cpu = time.process_time()
        feats = compute()
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(feats.to_dict(), f)
            os.chmod(tmp, storage.new_file_mode())  # mkstemp's 0600 would hide it from others
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        say(
            f"{what}: {len(feats)} videos x {feats.views} clips computed in "
            f"{time.perf_counter() - begin:.1f}s ({time.process_time() - cpu:.1f}s CPU), "
            f"{feats.nbytes / 2**20:.1f} MiB -> {path}"
        )
        return feats, False


# ----------------------------------------------------------------------------------------------
# Training on cached features


def feature_batches(
    feats: FeatureSet, batch_size: int, steps: int, seed: int, epoch: int, rank: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``steps`` batches ``(f_a, f_p, labels)`` (float32) of one epoch on cached features.

    Videos come in random order (a new permutation whenever one runs out, so every video is
    seen equally often), each with one of its views drawn at random: the cached views replace
    the fresh augmentation of an uncached epoch. Seeded by (seed, epoch, rank).
    """
    n = len(feats)
    if n == 0:
        raise InvalidInput("no cached features on this process (more processes than shards?)")
    rng = np.random.default_rng([seed, epoch, rank, 12])
    need = steps * batch_size
    order = np.concatenate([rng.permutation(n) for _ in range(-(-need // n))])[:need]
    views = rng.integers(feats.views, size=need)
    for s in range(steps):
        idx = torch.from_numpy(order[s * batch_size : (s + 1) * batch_size])
        v = torch.from_numpy(views[s * batch_size : (s + 1) * batch_size])
        yield feats.f_a[idx, v].float(), feats.f_p[idx, v].float(), feats.labels[idx]
