"""`train fit`: each stage, stage 2 from stage 1, checkpoints, exact resume, bad input."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings

import pytest
import torch
from train_support import (  # noqa: F401 (fixture)
    ENV,
    TINY,
    make_dataset,
    one_torch_thread,
    shared_runs,
    train_cli,
    truncate,
)

import model as models


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return shared_runs(tmp_path_factory)


def test_stage1_checkpoints_carry_state_and_contract(runs):
    for stage in ("appearance", "pose"):
        out = runs[stage]
        assert (out / "last.pt").exists() and (out / "best.pt").exists()
        assert (out / "epoch_001.pt").exists()
        ckpt = models.load_checkpoint(out / "last.pt")
        assert ckpt["model_config"]["variant"] == stage
        assert ckpt["optimizer"]["state"] and ckpt["scheduler"]["last_epoch"] == ckpt["epoch"]
        assert set(ckpt["rng"]) >= {"python", "numpy", "torch"}
        contract = ckpt["contract"]
        assert contract["layout"] == "coco17" and contract["classes"] == [
            "arms up",
            "arms out",
            "arms down",
        ]
        assert contract["input_size"] == 32 and contract["frame_stride"] == 2
        assert contract["normalisation"]["std"] == [1.0, 1.0, 1.0]
        if stage == "appearance":
            assert (contract["clip_len"], contract["stride"]) == (2, 4)
        else:
            assert (contract["pose_clip_len"], contract["pose_stride"]) == (4, 2)
        assert ckpt["extra"]["config"]["stage"] == stage
    with open(runs["appearance"] / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(float(r["clips_per_s"]) > 0 and 0 <= float(r["data_wait"]) <= 1 for r in rows)


def test_training_beats_chance_where_the_class_is_visible(runs):
    ckpt = models.load_checkpoint(runs["appearance"] / "best.pt")
    # 3 classes: chance is 33 %.
    assert ckpt["extra"]["best_top1"] >= 66.0
    assert ckpt["metrics"]["val_top1"] == ckpt["extra"]["best_top1"]


def test_stage2_trains_integration_on_frozen_streams(runs):
    ckpt = models.load_checkpoint(runs["integral"] / "last.pt")
    assert ckpt["model_config"]["variant"] == "integral" and ckpt["streams_frozen"]
    state = ckpt["state_dict"]
    for stage, prefix in (("appearance", "appearance."), ("pose", "pose.")):
        stage1 = models.load_checkpoint(runs[stage] / "last.pt")["state_dict"]
        for name, value in stage1.items():
            if name.startswith(prefix):  # weights and BatchNorm statistics untouched
                assert torch.equal(state[name], value), name
    init = models.build_integral_from_stage1(
        runs["appearance"] / "last.pt", runs["pose"] / "last.pt"
    ).state_dict()
    assert not torch.equal(state["classifier.weight"], init["classifier.weight"])  # trained
    contract = ckpt["contract"]
    assert (contract["clip_len"], contract["stride"]) == (2, 4)
    assert (contract["pose_clip_len"], contract["pose_stride"]) == (4, 2)
    assert ckpt["extra"]["config"]["optim"]["schedule"] is None  # stage2 by default
    assert ckpt["scheduler"]["base_lrs"] == [1e-3] * len(ckpt["scheduler"]["base_lrs"])


def test_resume_after_kill_equals_an_uninterrupted_run(runs, tmp_path):
    data = runs["data"]
    args = ["fit", "--stage", "pose", "--data", str(data), *TINY, "--epochs", "4", "--seed", "7"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "train", *args, "--out", str(killed)],
        env={**os.environ, **ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300
        while not (killed / "epoch_001.pt").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode < 0  # killed, not finished
    assert models.load_checkpoint(killed / "last.pt")["epoch"] < 4
    train_cli(*args, "--out", killed, "--resume")
    whole = tmp_path / "whole"
    train_cli(*args, "--out", whole)
    a = models.load_checkpoint(killed / "last.pt")
    b = models.load_checkpoint(whole / "last.pt")
    assert a["epoch"] == b["epoch"] == 4
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for name in a["state_dict"]:
        assert torch.equal(a["state_dict"][name], b["state_dict"][name]), name
    assert a["extra"]["history"][-1]["train_loss"] == b["extra"]["history"][-1]["train_loss"]
    with open(killed / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]


def one_line_error(result) -> str:
    assert result.exit_code not in (0, None), result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_bad_input_gives_one_line_errors(runs, tmp_path):
    data = str(runs["data"])
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    fit = ("fit", "--data", data, *TINY)
    cases = [
        (("fit", "--stage", "pose", "--data", str(tmp_path / "nope"), "--out", tmp_path / "a"),
         "no dataset.json"),
        ((*fit, "--stage", "appearance", "--stride", "3", "--out", tmp_path / "b"),
         "stride 3 is not a multiple of the dataset's frame stride 2"),
        ((*fit, "--stage", "integral", "--variant", "mystery", "--out", tmp_path / "c"),
         "not 'mystery'"),
        ((*fit, "--stage", "pose", "--variant", "integral", "--out", tmp_path / "d"),
         "stage pose trains variant pose"),
        ((*fit, "--stage", "pose", "--out", runs["pose"]), "already holds a run"),
        ((*fit, "--stage", "integral", "--init-appearance", runs["pose"] / "last.pt",
          "--init-pose", runs["pose"] / "last.pt", "--out", tmp_path / "e"),
         "expected a stage-1 'appearance' model"),
        ((*fit, "--stage", "pose", "--clip-len", "3", "--out", tmp_path / "f"),
         "--pose-clip-len (4) must be a multiple of --clip-len (3)"),
        ((*fit, "--stage", "pose", "--input-size", "8", "--out", tmp_path / "g"),
         "gives a 2 px pose raster"),
        ((*fit, "--stage", "pose", "--val-clips", "0", "--out", tmp_path / "h"),
         "--val-clips must be >= 1"),
        ((*fit, "--stage", "integral", "--gate-weight", "-1", "--out", tmp_path / "i"),
         "--gate-weight must be >= 0"),
        ((*fit, "--stage", "pose", "--max-read-error-fraction", "2", "--out", tmp_path / "j"),
         "--max-read-error-fraction must be between 0 and 1"),
        ((*fit, "--stage", "pose", "--out", a_file), f"--out {a_file} is a file"),
        ((*fit, "--stage", "pose", "--feature-cache", tmp_path, "--out", tmp_path / "p"),
         "--feature-cache is where --cache-features N keeps its features"),
        ((*fit, "--stage", "pose", "--shuffle-buffer", "-1", "--out", tmp_path / "n"),
         "--shuffle-buffer must be >= 0"),
        ((*fit, "--stage", "pose", "--epochs", "2", "--lr-steps", "1,2", "--out", tmp_path / "o"),
         "a step at or after the last epoch (2) never lowers the rate"),
        ((*fit, "--stage", "pose", "--split", "test", "--out", tmp_path / "k"),
         "no split 'test' in"),
        ((*fit, "--stage", "appearance", "--pretrained", tmp_path / "no.pth", "--out",
          tmp_path / "l"), "--pretrained: ImageNet weights"),
        ((*fit, "--stage", "appearance", "--pretrained", runs["pose"] / "last.pt", "--out",
          tmp_path / "m"), "not a torchvision ResNet state dict"),
    ]  # fmt: skip
    for args, message in cases:
        assert message in one_line_error(train_cli(*args, ok=False))


def test_damaged_shards_stop_training_beyond_the_read_error_limit(tmp_path):
    # 3 shards of 12 videos, one cut short: about a third of the samples are lost, though only
    # one error is logged per visit of the shard. The limit weighs samples, not errors.
    data = tmp_path / "ds"
    make_dataset(data, {"train": 36, "val": 2}, samples_per_shard=12, short=0, no_person=0, seed=5)
    truncate(data / "train" / "rgb-000000.tar", 0.2)
    fit = ("fit", "--stage", "appearance", "--data", data, *TINY, "--epochs", "1")
    # The share reported is the damage's, whatever the shuffle buffer: a resampled stream draws
    # the cut shard many times an epoch and its buffers read more than the steps use, so the
    # samples lost are weighed against the samples read over the same draws.
    for buffer in ("1", "64"):
        out = tmp_path / f"a{buffer}"
        with pytest.warns(RuntimeWarning, match="skipped corrupt shard"):
            stopped = train_cli(*fit, "--out", out, "--max-read-error-fraction", "0.1",
                                "--shuffle-buffer", buffer, ok=False)  # fmt: skip
        line = one_line_error_last(stopped)
        assert "samples drawn from the shards could not be read, more than " in line
        assert "rgb-000000.tar" in line and not (out / "last.pt").exists()
        lost, drawn = (int(x) for x in re.search(r"(\d+) of (\d+) samples", line).groups())
        assert 0.15 < lost / drawn < 0.4, (buffer, line)  # a shard of 3 cut to a fifth
    # Allowed: the epoch trains on what can be read, says what it skipped and counts it.
    with pytest.warns(RuntimeWarning, match="skipped corrupt shard") as seen:
        train_cli(*fit, "--out", tmp_path / "b", "--max-read-error-fraction", "1")
    assert any(str(w.message).startswith("epoch 1: skipped corrupt shard") for w in seen)
    with open(tmp_path / "b" / "metrics.csv") as f:
        assert int(next(csv.DictReader(f))["read_errors"]) >= 8  # the cut shard's lost samples


def test_damaged_shards_stop_the_feature_cache_before_it_is_saved(runs, tmp_path):
    data = tmp_path / "ds"
    shutil.copytree(runs["data"], data)
    truncate(data / "train" / "rgb-000001.tar", 0.0)  # 4 of 24 training videos
    with pytest.warns(RuntimeWarning, match="skipped corrupt shard"):
        result = train_cli(
            "fit", "--stage", "integral", "--data", data, "--out", tmp_path / "i", *TINY,
            "--init-appearance", runs["appearance"] / "last.pt",
            "--init-pose", runs["pose"] / "last.pt", "--cache-features", "1", "--epochs", "1",
            ok=False,
        )  # fmt: skip
    assert (
        "train features (train): 4 of 24 samples drawn from the shards could not be read"
        in one_line_error_last(result)
    )
    assert not list((tmp_path / "i" / "features").glob("*.pt"))  # no damaged cache to reuse


def one_line_error_last(result) -> str:
    """The error line of a run that failed after it started (its log lines come before)."""
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: "), result.output
    return last


def test_training_on_the_validation_split_is_said(runs, tmp_path):
    # --data naming the val folder makes val the training split too.
    with pytest.warns(UserWarning, match="training and validating on the same split 'val'"):
        train_cli(
            "fit", "--stage", "pose", "--data", runs["data"] / "val", "--out", tmp_path / "r",
            *TINY, "--epochs", "1",
        )  # fmt: skip


def test_checkpoint_of_another_layout_is_refused(runs, tmp_path):
    other = tmp_path / "openpose"
    make_dataset(other, {"train": 3}, layout="openpose18", short=0, no_person=0)
    result = train_cli(
        "fit", "--stage", "integral", "--data", other, "--out", tmp_path / "run",
        "--init-appearance", runs["appearance"] / "last.pt",
        "--init-pose", runs["pose"] / "last.pt", "--no-progress", ok=False,
    )  # fmt: skip
    assert "disagree on 'layout'" in one_line_error(result)


def test_cli_exit_status_in_a_real_process(tmp_path):
    # `python -m train` is what torchrun launches; the console script calls the same main().
    proc = subprocess.run(
        [sys.executable, "-m", "train", "fit", "--stage", "pose",
         "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env={**os.environ, **ENV}, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("Error: no dataset.json")
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_cli_warnings_are_one_plain_line_for_the_command_only():
    import click

    from pipeline.errors import plain_warnings

    before = warnings.formatwarning
    with click.Context(click.Command("x")):
        plain_warnings()
        text = warnings.formatwarning(
            RuntimeWarning("skipped a.tar: ReadError\ndetail"), RuntimeWarning, "fit.py", 3, "x()"
        )
    assert text == "warning: skipped a.tar: ReadError\n"
    assert warnings.formatwarning is before  # restored when the command ends


def test_config_file_and_schedules(tmp_path):
    from train.config import ConfigError, OptimConfig, build_fit_config

    path = tmp_path / "cfg.yaml"
    path.write_text("optim: {schedule: kinetics50, epochs: 8}\nclips: {clip_len: 4}\n")
    cfg = build_fit_config("pose", {"epochs": 4, "data": "x", "out": "y"}, str(path))
    assert cfg.optim.schedule == "kinetics50" and cfg.clips.clip_len == 4
    s = cfg.optim.resolve("pose")
    assert (s.lr, s.milestones, s.epochs) == (1e-2, (2, 3), 4)  # 20/30 of 40, scaled to 4
    assert OptimConfig().resolve("pose").milestones == (30, 60)  # kinetics, 70 epochs
    assert OptimConfig().resolve("integral").lr == 1e-3  # stage2
    assert OptimConfig(lr_steps=[5], epochs=9).resolve("pose").milestones == (5,)
    path.write_text("optim: {learning_rate: 1}\n")
    with pytest.raises(ConfigError, match="unknown setting 'learning_rate'"):
        build_fit_config("pose", {}, str(path))


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ('optim: {epochs: "ten"}', "optim: epochs must be int, got 'ten'"),
        ("clips: {clip_len: 2.5}", "clips: clip_len must be int, got 2.5"),
        ("model: {gate_weight: high}", "model: gate_weight must be float, got 'high'"),
        ('optim: {lr_steps: "1,2"}', "optim: lr_steps must be list[int], got '1,2'"),
        ("run: {channels_last: 1}", "run: channels_last must be bool, got 1"),
        ("run: {device: 0}", "run: device must be str, got 0"),
        ("model: {appearance_depth: 19}", "--appearance-depth must be one of 18, 34, 50, got 19"),
    ],
)
def test_config_file_values_are_type_checked(tmp_path, yaml_text, message):
    from train.config import ConfigError, build_fit_config

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml_text + "\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_fit_config("appearance", {}, str(path))


def test_the_documented_yaml_layout_names_every_setting_and_loads(tmp_path):
    import dataclasses
    import textwrap

    import yaml

    import train.config as config

    doc = config.__doc__
    layout = textwrap.dedent(doc[doc.index("    data:") : doc.index("Values are")])
    sections = yaml.safe_load(layout)
    for name, cls in config.SECTIONS.items():
        hidden = {"rank_report"}  # a debugging switch, hidden in --help too
        assert set(sections[name]) == {f.name for f in dataclasses.fields(cls)} - hidden, name
    path = tmp_path / "layout.yaml"
    path.write_text(layout)
    cfg = config.build_fit_config("integral", {}, str(path))
    assert cfg.data.workers == config.DataConfig().workers  # the layout shows the defaults


def test_config_file_whole_numbers_serve_as_floats(tmp_path):
    from train.config import build_fit_config

    path = tmp_path / "cfg.yaml"
    path.write_text("model: {gate_weight: 2}\noptim: {lr_steps: [3, 6], lr: 1}\n")
    cfg = build_fit_config("integral", {}, str(path))
    assert cfg.model.gate_weight == 2.0 and isinstance(cfg.model.gate_weight, float)
    assert cfg.optim.lr_steps == [3, 6] and isinstance(cfg.optim.lr, float)


def test_resume_keeps_the_runs_settings_and_refuses_other_ones(runs, tmp_path):
    run = tmp_path / "pose"
    shutil.copytree(runs["pose"], run)
    base = ("fit", "--stage", "pose", "--data", runs["data"], "--out", run, "--resume")
    changed = train_cli(*base, "--lr", "0.5", "--pose-depth", "34", ok=False)
    line = one_line_error(changed)
    assert "--pose-depth 34 (the run: 18), --lr 0.5 (the run: 0.01, from its schedule)" in line
    # Its schedule's own values given explicitly are the run's, not a change.
    same = train_cli(*base, "--lr", "0.01", "--schedule", "kinetics", "--workers", "0")
    assert f"the run in {run} has trained all its 1 epochs" in same.output
    # Only where and how, or the run's own values (--pose-clip-len 4 alone would not fit the
    # default --clip-len 8, the run's 2 it does): the run's settings (1 epoch, TINY clips).
    done = train_cli(
        *base, "--workers", "0", "--pose-clip-len", "4", "--max-read-error-fraction", "0.2"
    )
    assert f"the run in {run} has trained all its 1 epochs" in done.output
    config = json.loads((run / "config.json").read_text())
    assert config["optim"]["epochs"] == 1 and config["clips"]["input_size"] == 32
    assert config["data"]["max_read_error_fraction"] == 0.2  # a free setting, as given
    assert config["run"]["progress"] is False  # not given: the run's --no-progress
    # A run saved before a setting existed trained with its default: another value is refused
    # (before the optimiser state, whose parameter groups would not match, is loaded).
    del config["optim"]["classifier_weight_decay"]
    (run / "config.json").write_text(json.dumps(config))
    newer = train_cli(*base, "--classifier-weight-decay", "0.03", ok=False)
    assert "--classifier-weight-decay 0.03 (the run: unset)" in one_line_error(newer)
    again = train_cli(*base, "--workers", "0")
    assert f"the run in {run} has trained all its 1 epochs" in again.output


def test_precise_bn_averages_batch_statistics_and_spares_frozen_layers():
    from torch import nn

    from train.fit import recompute_batchnorm

    class Net(nn.Module):  # called as the trainer calls models: net(rgb, pose)
        def __init__(self):
            super().__init__()
            self.live, self.frozen = nn.BatchNorm1d(3), nn.BatchNorm1d(3)

        def forward(self, rgb, pose):
            return self.frozen(self.live(rgb))

    net = Net()
    net.frozen.eval()  # as stage 2's frozen streams
    before = net.frozen.running_mean.clone()
    xs = [torch.randn(8, 3) * (i + 1) + i for i in range(4)]
    batches = [{"key": []}] + [{"key": ["k"], "x": x} for x in xs]  # an errors-only batch too
    used = recompute_batchnorm(
        net, iter(batches), 3, lambda b: (b["x"], None), torch.device("cpu"), "fp32"
    )
    assert used == 3
    expected_mean = torch.stack([x.mean(0) for x in xs[:3]]).mean(0)
    expected_var = torch.stack([x.var(0) for x in xs[:3]]).mean(0)
    torch.testing.assert_close(net.live.running_mean, expected_mean)
    torch.testing.assert_close(net.live.running_var, expected_var)
    assert net.live.momentum == 0.1  # restored
    assert torch.equal(net.frozen.running_mean, before)


def test_pretrained_weights_and_imagenet_normalisation(runs, tmp_path):
    from model.resnet import ResNet
    from train.config import build_fit_config
    from train.data import open_split
    from train.fit import build_model

    weights = ResNet(18, shift_div=None, num_classes=1000).state_dict()  # torchvision names
    path = tmp_path / "resnet18.pth"
    torch.save(weights, path)
    options = {"data": str(runs["data"]), "out": str(tmp_path / "o"), "appearance_depth": 18}
    cfg = build_fit_config("appearance", {**options, "pretrained": str(path)})
    net, contract, _ = build_model(cfg, open_split(str(runs["data"]), "train"))
    assert contract["normalisation"]["mean"] == [0.485, 0.456, 0.406]
    loaded = net.appearance.backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in weights.items() if not k.startswith("fc."))
    result = train_cli(
        "fit", "--stage", "pose", "--data", runs["data"], "--out", tmp_path / "p",
        "--pretrained", path, ok=False,
    )  # fmt: skip
    assert "appearance stream" in one_line_error(result)


def test_pose_input_options_are_recorded_and_inherited(runs, tmp_path):
    pose_opts = ("--pose-crop", "person", "--pose-size", "12", "--pose-sigma", "1.0")
    train_cli(
        "fit", "--stage", "pose", "--data", runs["data"], "--out", tmp_path / "pose",
        *TINY, "--epochs", "1", *pose_opts,
    )  # fmt: skip
    contract = models.load_checkpoint(tmp_path / "pose" / "last.pt")["contract"]
    assert (contract["pose_crop"], contract["pose_size"], contract["pose_sigma"]) == (
        "person",
        12,
        1.0,
    )
    assert contract["raster"]["sigma"] == 0.5  # the dataset's rasters are unchanged
    # Stage 2 takes them from the pose checkpoint, and the gate's normalisation from its option.
    stage2 = (
        "fit", "--stage", "integral", "--data", runs["data"],
        "--init-appearance", runs["appearance"] / "last.pt",
        "--init-pose", tmp_path / "pose" / "last.pt",
        "--epochs", "1", "--batch-size", "4", "--workers", "0", "--no-progress",
    )  # fmt: skip
    train_cli(*stage2, "--out", tmp_path / "int", "--gate-norm", "batchnorm",
              "--gate-shape", "frame", "--gate-warmup", "0.5",
              "--classifier-weight-decay", "0.03")  # fmt: skip
    ckpt = models.load_checkpoint(tmp_path / "int" / "last.pt")
    assert ckpt["contract"]["pose_crop"] == "person" and ckpt["contract"]["pose_size"] == 12
    assert ckpt["model_config"]["gate_norm"] == "batchnorm"
    assert "cgb.bn.weight" in ckpt["state_dict"]
    assert ckpt["model_config"]["gate_shape"] == "frame"
    assert ckpt["state_dict"]["cgb.conv.weight"].shape[0] == 1
    saved = __import__("json").loads((tmp_path / "int" / "config.json").read_text())
    assert saved["optim"]["gate_warmup"] == 0.5
    assert saved["optim"]["classifier_weight_decay"] == 0.03
    # The depths built are the stage-1 checkpoints' (ResNet-18), not the defaults (50, 18).
    assert (saved["model"]["appearance_depth"], saved["model"]["pose_depth"]) == (18, 18)
    bad = train_cli(*stage2, "--out", tmp_path / "d", "--appearance-depth", "50", ok=False)
    assert bad.exit_code == 1 and "--appearance-depth 50 differs from the stage-1" in bad.output
    # A gate option on a variant without that gate does nothing: said, not silently taken.
    with pytest.warns(UserWarning, match="--gate-shape frame has no effect on variant no_gate"):
        train_cli(*stage2, "--out", tmp_path / "ng", "--variant", "no_gate", "--gate-shape",
                  "frame")  # fmt: skip
    with pytest.warns(UserWarning, match="--gate-warmup 0.5 has no effect on variant no_gate_loss"):
        train_cli(*stage2, "--out", tmp_path / "nl", "--variant", "no_gate_loss", "--gate-warmup",
                  "0.5", "--gate-shape", "frame")  # fmt: skip
    bad = train_cli(*stage2, "--out", tmp_path / "w", "--gate-warmup", "2", ok=False)
    assert bad.exit_code == 1 and "--gate-warmup is a fraction of the epochs" in bad.output
    bad = train_cli(*stage2, "--out", tmp_path / "w", "--classifier-weight-decay", "-1", ok=False)
    assert bad.exit_code == 1 and "--classifier-weight-decay must be >= 0" in bad.output
    # The pose input it sees in evaluation is the one it was trained with.
    report = tmp_path / "r.json"
    train_cli("eval", "--checkpoint", tmp_path / "int" / "last.pt", "--data", runs["data"],
              "--clips", "1", "--workers", "0", "--quiet", "--out", report)  # fmt: skip
    assert 0 < __import__("json").loads(report.read_text())["mean_gate"] < 1
    # The frozen stream cannot be fed another pose input.
    bad = train_cli(*stage2, "--out", tmp_path / "bad", "--pose-size", "16", ok=False)
    assert bad.exit_code == 1 and "--pose-size 16 differs from the stage-1" in bad.output


def test_pose_input_options_are_checked(runs, tmp_path):
    for args, message in (
        (("--pose-size", "2"), "--pose-size must be >= 4"),
        (("--pose-sigma", "0"), "--pose-sigma must be > 0"),
        (("--pose-input", "raster", "--pose-sigma", "1.0"), "needs rasters rendered from"),
    ):
        bad = train_cli(
            "fit", "--stage", "pose", "--data", runs["data"], "--out", tmp_path / "x",
            *TINY, "--epochs", "1", *args, ok=False,
        )  # fmt: skip
        assert bad.exit_code == 1 and message in bad.output, bad.output


def test_gate_warmup_ramps_lambda_linearly_then_holds_it():
    from train.fit import ramped_gate_weight

    assert ramped_gate_weight(1.5, 0.0, 0.0, 60) == 1.5  # the paper's: in full from the start
    ramp = [ramped_gate_weight(1.5, 0.5, e, 60) for e in (0.0, 7.5, 15.0, 30.0, 45.0, 59.9)]
    assert ramp == pytest.approx([0.0, 0.375, 0.75, 1.5, 1.5, 1.5])
    assert ramped_gate_weight(1.5, 1.0, 59.0, 60) == pytest.approx(1.5 * 59 / 60)


def test_classifier_weight_decay_is_the_classifier_layers_own():
    from train.config import OptimConfig
    from train.fit import parameter_groups

    torch.manual_seed(0)
    net = models.build("integral", 4, 8, appearance_depth=18, pose_depth=18, clip_len=2,
                       pose_clip_len=2)  # fmt: skip
    net.freeze_streams()
    head = {id(p) for p in net.parameters() if p.requires_grad}
    # Unset: one group, so optimiser states saved before the option existed still resume.
    (only,) = parameter_groups(net, OptimConfig())
    assert {id(p) for p in only["params"]} == head and "weight_decay" not in only
    rest, own = parameter_groups(net, OptimConfig(classifier_weight_decay=0.03))
    assert {id(p) for p in own["params"]} == {id(p) for p in net.classifier.parameters()}
    assert own["weight_decay"] == 0.03 and "weight_decay" not in rest
    assert {id(p) for p in rest["params"]} == head - {id(p) for p in own["params"]}
    # The decay acts: SGD steps with no loss shrink the classifier alone.
    opt = torch.optim.SGD(parameter_groups(net, OptimConfig(classifier_weight_decay=1.0)),
                          lr=0.5, weight_decay=0.0)  # fmt: skip
    before = {n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad}
    for p in net.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    opt.step()
    for name, p in net.named_parameters():
        if name in before:
            shrunk = name.startswith("classifier.") and before[name].abs().sum() > 0
            assert torch.equal(p, before[name]) != shrunk, name
            if shrunk:
                assert torch.allclose(p, 0.5 * before[name])
