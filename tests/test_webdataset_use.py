"""The shard format stands on the webdataset library: a build writes through ``TarWriter`` and a
training epoch reads through ``tarfile_to_samples`` (spied on, in this process), and the format
module is the only code that touches tar files."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import webdataset as wds
from train_support import TINY, train_cli

from pipeline.build import (
    BuildOptions,
    BuildSummary,
    build_shard,
    load_build_manifest,
    plan_shards,
    shard_context,
)
from pipeline.build.finalize import finalize
from pipeline.shards import KINDS, ShardSetWriter, shard_name
from pipeline.shards.reader import scan_tar
from pipeline.synth import make_dataset

REPO = Path(__file__).resolve().parents[1]


def _spy(monkeypatch, calls: Counter) -> None:
    real_writer, real_reader = wds.TarWriter, wds.tarfile_to_samples

    class SpyTarWriter(real_writer):
        def __init__(self, *args, **kwargs):
            calls["TarWriter"] += 1
            super().__init__(*args, **kwargs)

    def spy_reader(*args, **kwargs):
        calls["tarfile_to_samples"] += 1
        return real_reader(*args, **kwargs)

    monkeypatch.setattr(wds, "TarWriter", SpyTarWriter)
    monkeypatch.setattr(wds, "tarfile_to_samples", spy_reader)


def test_a_build_and_a_training_epoch_use_webdataset(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    make_dataset(raw, "kinetics", num_classes=2, videos_per_class=4, frames=24, width=64,
                 height=48, seed=3)  # fmt: skip
    out = tmp_path / "shards"
    options = BuildOptions(
        dataset="kinetics",
        videos=str(raw / "videos"),
        annotations=str(raw / "annotations.csv"),
        classes=str(raw / "classes.txt"),
        pose="precomputed",
        poses=str(raw / "skeletons"),
        out=str(out),
        short_side=48,
        samples_per_shard=2,
    )
    calls: Counter[str] = Counter()
    _spy(monkeypatch, calls)

    # The build's own per-shard function, in this process (a Ray task runs the same).
    manifest = load_build_manifest(options)
    ctx = shard_context(options, manifest)
    plan = plan_shards(manifest, options.seed, options.samples_per_shard, options.limit)
    shards = [spec for specs in plan.values() for spec in specs]
    for spec in shards:
        build_shard(spec, ctx)
    finalize(options, manifest, plan, ctx.layout, ctx.pose_tracked, BuildSummary(str(out)))
    assert calls["TarWriter"] == 3 * len(shards)  # rgb, pose and raster of every shard
    assert calls["tarfile_to_samples"] == 0

    train_cli(
        "fit", "--stage", "pose", "--data", out, "--out", tmp_path / "run", "--epochs", "1",
        "--val-every", "0", *TINY,
    )  # fmt: skip
    assert calls["tarfile_to_samples"] > 0


def test_only_the_format_package_imports_tarfile():
    """No hand-written tar handling outside pipeline/shards (tests keep independent readers)."""
    offenders = []
    for folder in ("pipeline", "train", "model", "benchmarks", "experiments"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path.parent.name == "shards" and path.parent.parent.name == "pipeline":
                continue
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                if "tarfile" in names:
                    offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_a_shard_set_without_samples_commits_valid_empty_tars(tmp_path, monkeypatch):
    # The writer opens its TarWriters on the first sample (importing webdataset, and torch with
    # it, costs seconds in a fresh Ray worker); a shard whose every video failed still gets one
    # readable, empty tar per kind under its final name, and nothing is opened before that.
    calls: Counter[str] = Counter()
    _spy(monkeypatch, calls)
    with ShardSetWriter(str(tmp_path / "train"), 7) as writer:
        assert calls["TarWriter"] == 0
        urls = writer.commit()
    assert calls["TarWriter"] == len(KINDS)
    assert sorted(Path(u).name for u in urls) == sorted(shard_name(k, 7) for k in KINDS)
    for url in urls:
        assert list(scan_tar(url)) == []
    assert not [p for p in (tmp_path / "train").iterdir() if p.name.startswith(".")]
