"""Stage-2 feature caches: exact features, keys that change with what they depend on, cached
training with the uncached run's steps, and evaluation through the cache."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest
import torch
from train_support import (  # noqa: F401 (fixture)
    one_torch_thread,
    shared_runs,
    train_cli,
)

import model as models
from train import data as D
from train.augment import normalise_rgb
from train.contract import normalisation_of, recipe_from_contract
from train.distributed import Dist
from train.features import cache_key, cached_features, compute_features, feature_batches


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return shared_runs(tmp_path_factory)


def _stage2(runs):
    net = models.build_integral_from_stage1(
        runs["appearance"] / "last.pt", runs["pose"] / "last.pt", "integral"
    )
    torch.nn.init.normal_(net.classifier.weight, std=0.1)  # logits that differ between clips
    split = D.open_split(str(runs["data"]), "train")
    recipe = recipe_from_contract(net.contract, "integral", split.info, train=False)
    return net, split, dataclasses.replace(recipe, views=3, seed=5)


def test_head_on_cached_features_equals_the_full_model(runs):
    net, split, recipe = _stage2(runs)
    norm = normalisation_of(net.contract)
    dist = Dist()
    feats = compute_features(net, split, recipe, norm, dist, batch_size=5, workers=0)
    assert len(feats) == len(split.index) and feats.views == 3
    assert feats.f_a.dtype == torch.float32 and feats.f_a.shape[2] == net.config["clip_len"]
    # The same clips again, through the whole model: the views depend on (seed, key) only.
    dataset = D.ClipDataset(split, recipe, 4)
    net.eval()
    seen = 0
    with torch.no_grad():
        for batch in D.make_loader(dataset, 0):
            if not batch["key"]:
                continue
            full = net(normalise_rgb(batch["rgb"], norm), batch["pose"])
            rows = [feats.keys.index(k) for k in batch["key"]]
            views = batch["clip"].tolist()
            head = net.head(feats.f_a[rows, views], feats.f_p[rows, views])
            torch.testing.assert_close(head["logits"], full["logits"], atol=1e-5, rtol=0)
            torch.testing.assert_close(head["gate"], full["gate"], atol=1e-5, rtol=0)
            seen += len(rows)
    assert seen == 3 * len(split.index)
    # The views of a video differ from one another (random starts, crops and flips).
    assert not torch.equal(feats.f_a[:, 0], feats.f_a[:, 1])


def test_cache_key_covers_what_features_depend_on(runs, tmp_path):
    net, split, recipe = _stage2(runs)
    norm = normalisation_of(net.contract)
    labels = split.index.label_of()
    key = cache_key(net, split, recipe, norm, labels)
    assert key == cache_key(net, split, recipe, norm, labels)
    changed = [
        cache_key(net, split, dataclasses.replace(recipe, views=4), norm, labels),
        cache_key(net, split, dataclasses.replace(recipe, seed=6), norm, labels),
        cache_key(net, split, dataclasses.replace(recipe, pose_crop="person"), norm, labels),
        cache_key(net, split, dataclasses.replace(recipe, pose_size=12), norm, labels),
        cache_key(net, split, dataclasses.replace(recipe, input_size=36), norm, labels),
        cache_key(net, D.open_split(str(runs["data"]), "val"), recipe, norm, labels),
        cache_key(net, split, recipe, norm, labels, dtype="float16"),
        cache_key(net, split, recipe, norm, labels, rank=1, world_size=2),
    ]
    other = models.build_integral_from_stage1(
        runs["appearance"] / "last.pt", runs["pose"] / "last.pt", "integral"
    )
    with torch.no_grad():
        other.pose.front[0].weight.add_(1e-3)  # another pose checkpoint
    changed.append(cache_key(other, split, recipe, norm, labels))
    assert key not in changed and len(set(changed)) == len(changed)

    calls = []

    def compute():
        calls.append(1)
        return compute_features(net, split, recipe, norm, Dist(), batch_size=8, workers=0)

    first, loaded = cached_features(str(tmp_path), key, compute, say=lambda _: None)
    again, loaded_again = cached_features(str(tmp_path), key, compute, say=lambda _: None)
    assert (loaded, loaded_again, len(calls)) == (False, True, 1)
    assert torch.equal(first.f_p, again.f_p) and first.keys == again.keys


def test_feature_batches_visit_every_video_evenly(runs):
    net, split, recipe = _stage2(runs)
    feats = compute_features(
        net, split, recipe, normalisation_of(net.contract), Dist(), batch_size=8, workers=0
    )
    n = len(feats)
    batches = list(feature_batches(feats, 4, 2 * n // 4, seed=0, epoch=0, rank=0))
    assert len(batches) == 2 * n // 4
    f_a, f_p, labels = batches[0]
    assert f_a.shape == (4, *feats.f_a.shape[2:]) and f_a.dtype == torch.float32
    assert labels.dtype == torch.int64
    again = list(feature_batches(feats, 4, 2 * n // 4, seed=0, epoch=0, rank=0))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))
    other_epoch = next(feature_batches(feats, 4, 1, seed=0, epoch=1, rank=0))
    assert not torch.equal(other_epoch[0], batches[0][0])


def _val_top1(out):
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return rows, float(rows[-1]["val_top1"])


def test_cached_stage2_trains_like_the_uncached_one(runs, tmp_path):
    common = (
        "--stage", "integral", "--data", runs["data"],
        "--init-appearance", runs["appearance"] / "last.pt",
        "--init-pose", runs["pose"] / "last.pt",
        "--epochs", "6", "--lr", "0.01", "--batch-size", "4", "--workers", "0", "--no-progress",
    )  # fmt: skip
    train_cli("fit", *common, "--out", tmp_path / "uncached")
    result = train_cli("fit", *common, "--out", tmp_path / "cached", "--cache-features", "4")
    assert "train features (train): 24 videos x 4 clips computed" in result.output
    rows_u, top1_u = _val_top1(tmp_path / "uncached")
    rows_c, top1_c = _val_top1(tmp_path / "cached")
    # The same number of steps and clips per epoch.
    assert [r["epoch"] for r in rows_u] == [r["epoch"] for r in rows_c]
    # Both learn the task (3 classes, chance 33 %) and end within two of the 12 val videos.
    assert top1_u >= 66 and top1_c >= 66 and abs(top1_u - top1_c) <= 100 * 2 / 12 + 1e-6
    # The mean gate of each epoch is logged, for training and validation.
    assert all(0 < float(r["train_mean_gate"]) < 1 for r in rows_c)
    assert all(0 < float(r["val_mean_gate"]) < 1 for r in rows_c)
    ckpt = models.load_checkpoint(tmp_path / "cached" / "last.pt")
    assert ckpt["extra"]["config"]["run"]["cache_features"] == 4 and ckpt["streams_frozen"]
    # A second run with the same streams and recipe loads the cache instead of computing it.
    shared = tmp_path / "cached" / "features"
    again = train_cli(
        "fit", *common, "--out", tmp_path / "again", "--cache-features", "4",
        "--feature-cache", shared, "--gate-weight", "0", "--epochs", "1",
    )  # fmt: skip
    assert "train features (train): 24 videos x 4 clips from" in again.output


def test_eval_through_the_feature_cache_equals_plain_eval(runs, tmp_path):
    ckpt = runs["integral"] / "last.pt"
    common = ("eval", "--checkpoint", ckpt, "--data", runs["data"], "--clips", "2",
              "--workers", "0", "--quiet")  # fmt: skip
    train_cli(*common, "--out", tmp_path / "plain.json")
    train_cli(*common, "--out", tmp_path / "cached.json", "--feature-cache", tmp_path / "fc")
    assert list((tmp_path / "fc").glob("*.pt"))
    plain = json.loads((tmp_path / "plain.json").read_text())
    cached = json.loads((tmp_path / "cached.json").read_text())
    assert plain["top1"] == cached["top1"] and plain["num_videos"] == cached["num_videos"]
    for key, p in plain["predictions"].items():
        q = cached["predictions"][key]
        assert p["pred"] == q["pred"] and p["score"] == pytest.approx(q["score"], abs=1e-5)
        assert p["gate"] == pytest.approx(q["gate"], abs=1e-5)


def test_cache_features_is_refused_where_it_cannot_apply(runs, tmp_path):
    bad = train_cli(
        "fit", "--stage", "pose", "--data", runs["data"], "--out", tmp_path / "x",
        "--cache-features", "2", ok=False,
    )  # fmt: skip
    assert bad.exit_code == 1 and "--cache-features is for stage integral" in bad.output
    bad = train_cli(
        "fit", "--stage", "integral", "--data", runs["data"], "--out", tmp_path / "y",
        "--cache-features", "2", ok=False,
    )  # fmt: skip
    assert bad.exit_code == 1 and "needs --init-appearance" in bad.output
