"""The shard loader: epoch length, determinism, rank/worker coverage, corrupt shards, clips."""

from __future__ import annotations

import shutil
import warnings
from collections import Counter

import numpy as np
import pytest
import torch
from train_support import make_dataset, truncate

from pipeline.shards import ShardMismatchError, decode_pose
from pipeline.shards.reader import shard_source, shuffle_stage
from train import clips
from train import data as D
from train.clips import ClipSpec


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader") / "ds"
    make_dataset(root, {"train": 12, "val": 10}, samples_per_shard=3, short=1, no_person=1)
    return root


def recipe(info, *, rgb=True, pose=True, train=True, num_clips=1, pose_input="keypoints"):
    return D.ClipRecipe(
        rgb=ClipSpec(2, 4) if rgb else None,
        pose=ClipSpec(4, 2) if pose else None,
        input_size=16,
        frame_stride=info.frame_stride,
        layout=info.layout,
        raster=info.raster,
        pose_input=pose_input,
        train=train,
        num_clips=num_clips,
    )


def take(loader, n):
    out = []
    for batch in loader:
        if batch["key"]:
            out.append(batch)
        if len(out) == n:
            break
    return out


def test_epoch_length_is_ceil_of_videos_over_global_batch():
    assert D.steps_per_epoch(12, 4, 1) == 3
    assert D.steps_per_epoch(13, 4, 1) == 4
    assert D.steps_per_epoch(13, 4, 2) == 2  # global batch 8
    assert D.steps_per_epoch(1, 32, 4) == 1


def test_batches_hold_aligned_clips(synth):
    split = D.open_split(str(synth), "train")
    ds = D.ClipDataset(split, recipe(split.info), 4, seed=1, shuffle_buffer=4)
    (batch,) = take(D.make_loader(ds, 0), 1)
    assert batch["rgb"].dtype == torch.uint8 and batch["rgb"].shape == (4, 2, 3, 16, 16)
    assert batch["pose"].dtype == torch.float32 and batch["pose"].shape == (4, 4, 55, 4, 4)
    labels = split.index.label_of()
    assert batch["label"].tolist() == [labels[k] for k in batch["key"]]


def test_training_stream_is_deterministic_per_seed_epoch_rank(synth):
    split = D.open_split(str(synth), "train")

    def keys(seed=0, epoch=0, rank=0, workers=0):
        ds = D.ClipDataset(split, recipe(split.info), 3, seed=seed, rank=rank, world_size=2)
        ds.set_epoch(epoch)
        batches = take(D.make_loader(ds, workers), 4)
        return [k for b in batches for k in b["key"]], batches[0]["rgb"]

    a_keys, a_rgb = keys(workers=2)
    assert len(a_keys) == 12
    b_keys, b_rgb = keys(workers=2)
    assert a_keys == b_keys and torch.equal(a_rgb, b_rgb)  # same seed: same data, same crops
    assert keys()[0] != a_keys  # each worker draws its own stream
    assert keys(epoch=1)[0] != a_keys
    assert keys(rank=1)[0] != a_keys
    assert keys(seed=5)[0] != a_keys


def test_fewer_shards_than_ranks_times_workers_still_feeds_every_rank(tmp_path):
    make_dataset(tmp_path, {"train": 4}, samples_per_shard=4, short=0, no_person=0)  # 1 shard
    split = D.open_split(str(tmp_path), "train")
    for rank in range(3):
        ds = D.ClipDataset(
            split, recipe(split.info, rgb=False), 2, rank=rank, world_size=3, shuffle_buffer=2
        )
        assert len(take(D.make_loader(ds, 2), 3)) == 3  # no rank runs dry


@pytest.mark.parametrize("world,workers", [(1, 0), (2, 2), (3, 2)])
def test_evaluation_sees_every_video_exactly_once(synth, world, workers):
    split = D.open_split(str(synth), "val")  # 10 videos in 4 shards: (3, 2) has idle workers
    seen = Counter()
    for rank in range(world):
        ds = D.ClipDataset(
            split,
            recipe(split.info, train=False, num_clips=3),
            4,
            rank=rank,
            world_size=world,
        )
        per_rank = Counter()
        for batch in D.make_loader(ds, workers):
            per_rank.update(batch["key"])
        assert all(n == 3 for n in per_rank.values())  # all 3 clips of a video on one rank
        seen.update(per_rank.keys())
    assert sorted(seen) == sorted(split.index.keys)
    assert set(seen.values()) == {1}


def test_evaluation_shard_lists_partition_over_ranks_and_workers(monkeypatch):
    import webdataset as wds

    urls = [f"/d/val/pose-{n:06d}.tar" for n in range(7)]
    parts = []
    for rank in range(2):
        for worker in range(3):
            # webdataset's split_by_worker reads the DataLoader worker from these when set.
            monkeypatch.setenv("WORKER", str(worker))
            monkeypatch.setenv("NUM_WORKERS", "3")
            stages = shard_source(urls, resample=False, rank=rank, world_size=2)
            parts.append([s["url"] for s in wds.DataPipeline(*stages)])
    assert sorted(u for p in parts for u in p) == urls


def test_corrupt_shard_is_reported_and_skipped(synth, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(synth, root)
    truncate(root / "val" / "rgb-000001.tar", 0.6)  # damaged mid-stream
    split = D.open_split(str(root), "val")
    ds = D.ClipDataset(split, recipe(split.info, train=False), 4)
    keys, errors, lost = [], [], 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for batch in D.make_loader(ds, 0):
            keys += batch["key"]
            errors += batch["errors"]
            lost += batch["lost"]
    assert len(errors) == 1 and "rgb-000001.tar" in errors[0] and "corrupt shard" in errors[0]
    assert any("rgb-000001.tar" in str(w.message) for w in caught)
    shard1 = {k for k, s in zip(split.index.keys, split.index.shards, strict=True) if s == 1}
    others = set(split.index.keys) - shard1
    assert others <= set(keys)  # the other shards are read in full
    assert len(set(keys) & shard1) < len(shard1)  # the damaged part is skipped
    assert lost == len(shard1 - set(keys))  # each video not handed on counted once
    # Training keeps going over a damaged shard too, counting it each time it is drawn.
    train = D.ClipDataset(split, recipe(split.info), 4, seed=0, shuffle_buffer=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = take(D.make_loader(train, 0), 6)
    assert len(batches) == 6


def read_all(ds):
    keys, errors, lost = [], [], 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for batch in D.make_loader(ds, 0):
            keys += batch["key"]
            errors += batch["errors"]
            lost += batch["lost"]
    return keys, errors, lost


def test_missing_shard_is_reported_as_missing_not_corrupt(synth, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(synth, root)
    (root / "val" / "pose-000002.tar").unlink()
    split = D.open_split(str(root), "val")
    keys, errors, lost = read_all(D.ClipDataset(split, recipe(split.info, train=False), 4))
    assert errors == [
        f"missing shard {root}/val/rgb-000002.tar+pose-000002.tar: "
        "FileNotFoundError: pose-000002.tar not found"
    ]
    shard2 = {k for k, s in zip(split.index.keys, split.index.shards, strict=True) if s == 2}
    assert set(keys) == set(split.index.keys) - shard2 and lost == len(shard2)


def test_pose_stage_reads_only_pose_shards(synth, tmp_path):
    root = tmp_path / "pose-only"
    shutil.copytree(synth, root)
    for tar in root.glob("*/rgb-*.tar"):
        tar.unlink()
    for tar in root.glob("*/raster-*.tar"):
        tar.unlink()
    split = D.open_split(str(root / "val"), None)  # a split folder works as --data
    assert split.name == "val"
    assert D.shard_kinds(recipe(split.info, rgb=False)) == ("pose",)
    assert D.shard_kinds(recipe(split.info, rgb=False, pose_input="raster")) == ("pose", "raster")
    assert D.shard_kinds(recipe(split.info, pose=False)) == ("rgb",)
    ds = D.ClipDataset(split, recipe(split.info, rgb=False, train=False), 4)
    batches = list(D.make_loader(ds, 0))
    assert sum(len(b["key"]) for b in batches) == 10
    assert not any(b["errors"] for b in batches)
    assert "rgb" not in batches[0]


def test_stored_raster_input(synth):
    split = D.open_split(str(synth), "val")
    ds = D.ClipDataset(split, recipe(split.info, rgb=False, pose_input="raster", train=False), 10)
    (batch,) = list(D.make_loader(ds, 0))
    assert batch["pose"].shape == (10, 4, 55, 4, 4)
    with_person = batch["has_pose"]
    assert batch["pose"][with_person].amax() > 0.3  # heatmap peaks survive the crop
    assert batch["pose"][~with_person].abs().max() == 0


def test_misaligned_shards_are_refused(synth, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(synth, root)
    shutil.copy(root / "val" / "pose-000000.tar", root / "val" / "pose-000001.tar")
    split = D.open_split(str(root), "val")
    ds = D.ClipDataset(split, recipe(split.info, train=False), 4)
    with pytest.raises(ShardMismatchError, match="keys differ across rgb/pose"):
        list(D.make_loader(ds, 0))


def test_only_the_clip_frames_are_decoded(synth):
    split = D.open_split(str(synth), "train")
    group = next(iter(split.read_shard(1, ("rgb", "pose"))))
    key = group["__key__"]
    _, frames, _ = decode_pose(group)
    r = D.ClipRecipe(ClipSpec(2, 4), None, 16, 2, split.info.layout, train=False)
    first, last, _ = clips.start_range(frames, r.span, 2)
    (start,) = clips.test_starts(first, last, 2, 1)
    read = set(frames[clips.clip_positions(frames, start, r.rgb)].tolist())
    # Garble every JPEG the clip does not read: decoding them would fail.
    for f in frames:
        if int(f) not in read:
            group[f"{int(f):06d}.jpg"] = b"not a jpeg"
    (clip,) = D.video_clips(key, group, r, None)
    assert clip["rgb"].shape == (2, 3, 16, 16)
    # A clip over other frames meets the garbled members: an error (then logged and skipped).
    other = D.ClipRecipe(ClipSpec(3, 6), None, 16, 2, split.info.layout, train=False)
    with pytest.raises(ValueError):
        D.video_clips(key, group, other, None)


def test_shuffle_buffer_is_a_permutation():
    import random

    out = list(shuffle_stage(10, random.Random(0))(iter(range(100))))
    assert sorted(out) == list(range(100)) and out != list(range(100))
    assert np.mean(np.abs(np.array(out) - np.arange(100))) < 20  # bounded displacement
