"""Checkpoint retention: a long run keeps only the most recent epoch files when asked."""

from __future__ import annotations

from train_support import TINY, make_dataset, one_torch_thread, train_cli  # noqa: F401

import model as models


def test_keep_checkpoints_keeps_the_latest_epochs_best_and_last(tmp_path):
    make_dataset(tmp_path / "ds", {"train": 6, "val": 3})
    out = tmp_path / "run"
    train_cli(
        "fit", "--stage", "pose", "--data", tmp_path / "ds", "--out", out, "--epochs", "4",
        "--keep-checkpoints", "2", *TINY,
    )  # fmt: skip
    assert sorted(p.name for p in out.glob("epoch_*.pt")) == ["epoch_003.pt", "epoch_004.pt"]
    assert (out / "last.pt").exists() and (out / "best.pt").exists()
    best = models.load_checkpoint(out / "best.pt")
    assert 1 <= best["epoch"] <= 4  # best.pt survives even when its epoch file was removed
