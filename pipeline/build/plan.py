"""The shard plan: which videos go to which shard of which split.

A pure function of the manifest, the seed and the options, so a rerun after a crash rebuilds
exactly the shards that are missing and the result equals an uninterrupted build.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import numpy as np

from ..datasets import Manifest, VideoItem

__all__ = [
    "DEFAULT_MAX_SAMPLES_PER_SHARD",
    "MIN_SHARDS_PER_SPLIT",
    "ShardSpec",
    "samples_per_shard",
    "plan_shards",
    "plan_digest",
    "stable_hash",
]

DEFAULT_MAX_SAMPLES_PER_SHARD = 100  # ~256 MB of rgb at Kinetics scale (~2.5 MB per video)
MIN_SHARDS_PER_SPLIT = 8  # so small datasets still spread over workers and DDP ranks


@dataclass
class ShardSpec:
    split: str
    number: int
    items: list[VideoItem]


def samples_per_shard(n: int, requested: int | None) -> int:
    """``requested``, else min(100, ceil(n / 8)): near 256 MB shards, at least 8 per split."""
    if requested is not None:
        return requested
    return max(1, min(DEFAULT_MAX_SAMPLES_PER_SHARD, math.ceil(n / MIN_SHARDS_PER_SPLIT)))


def stable_hash(text: str) -> int:
    # Python's hash() is salted per process; the plan must not be.
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def plan_shards(
    manifest: Manifest, seed: int, per_shard: int | None, limit: int | None
) -> dict[str, list[ShardSpec]]:
    """Split -> shards. Order is shuffled with ``seed`` (shards come out ready for training).

    Items are first sorted by key so the plan does not depend on the order files were listed in.
    """
    plan: dict[str, list[ShardSpec]] = {}
    for split in sorted({item.split for item in manifest.items}):
        items = sorted((i for i in manifest.items if i.split == split), key=lambda i: i.key)
        rng = np.random.default_rng([seed, stable_hash(split)])
        items = [items[i] for i in rng.permutation(len(items))]
        if limit is not None:
            items = items[:limit]
        size = samples_per_shard(len(items), per_shard)
        plan[split] = [
            ShardSpec(split, n, items[start : start + size])
            for n, start in enumerate(range(0, len(items), size))
        ]
    return plan


def plan_digest(plan: dict[str, list[ShardSpec]]) -> str:
    """A digest of which key goes to which shard: resuming with another plan would mix datasets."""
    keys = {split: [[i.key for i in spec.items] for spec in specs] for split, specs in plan.items()}
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()
