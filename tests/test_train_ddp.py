"""DDP under torchrun: 2 CPU processes with gloo, same steps, disjoint evaluation, same weights."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from train_support import ENV, TINY, make_dataset, train_cli, truncate

import model as models
from train import data as D
from train.fit import state_checksum

TORCHRUN = Path(sys.executable).parent / "torchrun"


def test_two_gloo_processes_train_in_lockstep(tmp_path):
    data = tmp_path / "ds"
    make_dataset(data, {"train": 12, "val": 10}, samples_per_shard=3)
    out, report = tmp_path / "run", tmp_path / "ranks"
    proc = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "train", "fit",
         "--stage", "pose", "--data", str(data), "--out", str(out), *TINY,
         "--epochs", "2", "--workers", "1", "--rank-report", str(report)],
        capture_output=True, text=True, env={**os.environ, **ENV}, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    ranks = [json.loads((report / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # Every rank ran ceil(12 videos / (2 x 4)) = 2 steps in each epoch.
    assert ranks[0]["train_steps"] == ranks[1]["train_steps"] == [2, 2]
    # Validation: each video on exactly one rank, all of them in all.
    val = set(D.open_split(str(data), "val").index.keys)
    a, b = (set(r["val_keys"]) for r in ranks)
    assert a and b and not a & b and a | b == val
    # The same weights (and BatchNorm statistics) everywhere, and in the checkpoint.
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    saved = models.build_from_checkpoint(models.load_checkpoint(out / "last.pt"))
    assert state_checksum(saved) == ranks[0]["checksum"]
    assert models.load_checkpoint(out / "last.pt")["extra"]["world_size"] == 2
    # Only rank 0 writes logs: one line per epoch.
    assert proc.stdout.count("epoch 2/2 ") == 1


def test_a_damaged_split_stops_every_rank_before_caching_its_features(tmp_path):
    # Each rank reads its share for the feature cache; the whole split's damage must decide on
    # every rank at once, or the healthy rank waits in a collective for one that has left.
    data, damaged = tmp_path / "ds", tmp_path / "damaged"
    make_dataset(data, {"train": 24, "val": 4}, samples_per_shard=4, short=0, no_person=0)
    for stage in ("appearance", "pose"):
        train_cli("fit", "--stage", stage, "--data", data, "--out", tmp_path / stage, *TINY,
                  "--epochs", "1")  # fmt: skip
    shutil.copytree(data, damaged)
    truncate(damaged / "train" / "rgb-000001.tar", 0.0)  # 4 of 24 training videos
    out = tmp_path / "integral"
    proc = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "train", "fit",
         "--stage", "integral", "--data", str(damaged), "--out", str(out), *TINY,
         "--init-appearance", str(tmp_path / "appearance" / "last.pt"),
         "--init-pose", str(tmp_path / "pose" / "last.pt"), "--cache-features", "1",
         "--epochs", "1"],
        capture_output=True, text=True, env={**os.environ, **ENV}, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert (
        "Error: train features (train): 4 of 24 samples drawn from the shards could not be read"
        in proc.stderr
    )
    assert "Connection closed" not in proc.stderr  # no rank was left behind in a collective
    assert not list((out / "features").glob("*.pt"))
