"""End to end through the real pipeline: `pipeline synth` -> `pipeline build` (local Ray,
precomputed poses) -> `train fit` stage 1 (both streams) -> stage 2 -> `train eval`.

The synthetic Kinetics-layout data is in context (each class has its own scene), so the
appearance stream must learn it well above chance on the validation split.
"""

from __future__ import annotations

import json

import pytest
from helpers import run_cli
from train_support import ENV, TINY, one_torch_thread, train_cli  # noqa: F401

import model as models

pytestmark = pytest.mark.slow


def test_synth_build_train_both_stages_and_evaluate(tmp_path):
    raw, shards = tmp_path / "raw", tmp_path / "shards"
    run_cli(
        "pipeline", "synth", "--dataset", "kinetics", "--out", raw, "--num-classes", "3",
        "--videos-per-class", "8", "--frames", "24", "--seed", "3", env=ENV,
    )  # fmt: skip
    run_cli(
        "pipeline", "build", "--dataset", "kinetics", "--videos", raw / "videos",
        "--annotations", raw / "annotations.csv", "--classes", raw / "classes.txt",
        "--pose", "precomputed", "--poses", raw / "skeletons", "--out", shards,
        "--num-workers", "2", "--short-side", "64", "--quiet", env=ENV,
    )  # fmt: skip
    runs = {stage: tmp_path / stage for stage in ("appearance", "pose", "integral")}
    train_cli(
        "fit", "--stage", "appearance", "--data", shards, "--out", runs["appearance"], *TINY,
        "--epochs", "6", "--lr", "0.003", "--precise-bn", "4",
    )  # fmt: skip
    train_cli("fit", "--stage", "pose", "--data", shards, "--out", runs["pose"], *TINY,
              "--epochs", "1")  # fmt: skip
    train_cli(
        "fit", "--stage", "integral", "--data", shards, "--out", runs["integral"],
        "--init-appearance", runs["appearance"] / "last.pt",
        "--init-pose", runs["pose"] / "last.pt", "--epochs", "1", "--workers", "0",
        "--no-progress",
    )  # fmt: skip
    best = models.load_checkpoint(runs["appearance"] / "best.pt")
    assert best["contract"]["layout"] == "openpose18"  # the build's layout, carried along
    assert best["extra"]["best_top1"] >= 66.0  # 3 in-context classes: chance is 33 %
    report_path = tmp_path / "report.json"
    result = train_cli(
        "eval", "--checkpoint", runs["integral"] / "last.pt", "--data", shards,
        "--split", "val", "--out", report_path, "--workers", "0",
    )  # fmt: skip
    report = json.loads(report_path.read_text())
    assert report["num_videos"] == 6 and report["clips"] == 10
    assert "mean_gate" in report and "top-1 %" in result.output
