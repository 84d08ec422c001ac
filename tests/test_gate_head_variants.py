"""experiments/gate_head_variants.py: the variants change what they say and nothing else.

The script's findings (docs/model.md, "Measured: what sets the gate's class pattern") rest on
``gate-loss-only`` really cutting the classification loss off from the gate, on
``gate-loss-bias-only`` cutting the gate loss off from the gate's weights, and on the schedule
variants changing only their own setting. A whole experiment run is too slow for the tests, so
these run the script's functions on a small integral model and random cached features.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import model
from train.features import FeatureSet

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
CLASSES = 3


@pytest.fixture
def variants(monkeypatch):
    monkeypatch.syspath_prepend(str(EXPERIMENTS))  # the script imports its sibling out_of_context
    import gate_head_variants

    return gate_head_variants


def settings(gate_weight: float, weight_decay: float = 0.0, epochs: int = 4) -> dict:
    return {
        "optim": {
            "epochs": epochs,
            "lr": 0.05,
            "momentum": 0.9,
            "weight_decay": weight_decay,
            "batch_size": 4,
        },
        "model": {"gate_weight": gate_weight},
        "run": {"seed": 0},
    }


def small_integral() -> model.ActionModel:
    torch.manual_seed(0)
    return model.build(
        "integral", CLASSES, 4, appearance_depth=18, pose_depth=18, clip_len=2, pose_clip_len=2
    )


def features(net: model.ActionModel, videos: int = 12, views: int = 2, frames: int = 2):
    g = torch.Generator().manual_seed(1)
    c_a, c_p = net.tcb_a.conv.in_channels, net.tcb_p.conv.in_channels
    return FeatureSet(
        keys=[f"v{i:02d}" for i in range(videos)],
        labels=torch.arange(videos) % CLASSES,
        f_a=torch.rand(videos, views, frames, c_a, generator=g),
        f_p=torch.rand(videos, views, frames, c_p, generator=g),
        padded=torch.zeros(videos, dtype=torch.bool),
        has_pose=torch.ones(videos, dtype=torch.bool),
    )


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def changed(before: dict, module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_gate_loss_only_keeps_the_classification_loss_away_from_the_gate(variants):
    # lambda 0 and no weight decay: the gate's only teacher would be the classification loss.
    for kind, gate_moves in (("raw", True), ("gate-loss-only", False)):
        net = small_integral()
        feats = features(net)
        gate, classifier = state(net.cgb), state(net.classifier)
        variants.train_head(net, feats, variants.with_variant(settings(0.0), kind, 0.0))
        assert changed(gate, net.cgb) is gate_moves, kind
        assert changed(classifier, net.classifier), kind


def test_gate_loss_only_still_closes_the_gate_with_the_gate_loss(variants):
    net = small_integral()
    feats = features(net)
    with torch.no_grad():
        before = net.head(feats.f_a[:, 0], feats.f_p[:, 0])["gate"].mean().item()
    run = variants.with_variant(settings(1.5, epochs=12), "gate-loss-only", 0.0)
    variants.train_head(net, feats, run)
    with torch.no_grad():
        after = net.head(feats.f_a[:, 0], feats.f_p[:, 0])["gate"].mean().item()
    assert after < before - 0.1


def test_gate_loss_bias_only_lets_the_gate_loss_move_the_bias_alone(variants):
    # One SGD step from the same weights on the same batch: the gate's weights must take the
    # classification loss's step alone (as at lambda 0), its bias the gate loss's too.
    trained = {}
    for kind, lam in (("raw", 0.0), ("gate-loss-bias-only", 1.5)):
        net = small_integral()
        feats = features(net, videos=4)
        variants.train_head(net, feats, variants.with_variant(settings(lam, epochs=1), kind, 0.0))
        trained[kind] = net.cgb.conv
    ce_only, bias_only = trained["raw"], trained["gate-loss-bias-only"]
    assert torch.equal(ce_only.weight, bias_only.weight)
    assert (bias_only.bias < ce_only.bias).all()  # L_gate pushes every gate logit down


def test_classifier_weight_decay_shrinks_the_classifier(variants):
    base, decayed = small_integral(), small_integral()
    feats = features(base)
    variants.train_head(base, feats, settings(0.0))
    variants.train_head(decayed, feats, variants.with_variant(settings(0.0), "wd-classifier", 0.5))
    assert decayed.classifier.weight.norm() < 0.9 * base.classifier.weight.norm()


def test_schedule_variants_change_their_own_setting_only(variants):
    original = settings(1.5, weight_decay=1e-4)
    kept = copy.deepcopy(original)
    cases = {
        ("epochs", 20.0): ("optim", "epochs", 20),
        ("lr", 0.01): ("optim", "lr", 0.01),
        ("lambda", 5.0): ("model", "gate_weight", 5.0),
        ("wd", 0.01): ("optim", "weight_decay", 0.01),
        ("smoothing", 0.1): ("optim", "label_smoothing", 0.1),
    }
    for (kind, value), (section, key, expected) in cases.items():
        result = variants.with_variant(original, kind, value)
        assert result[section][key] == expected
        assert type(result[section][key]) is type(expected)
        # wd=X is the whole head's: it also takes back a classifier decay of the run's own.
        also = {"classifier_weight_decay"} if kind == "wd" else set()
        others = {k: v for k, v in result[section].items() if k not in {key} | also}
        assert others == {k: v for k, v in kept[section].items() if k not in {key} | also}
    assert original == kept  # the run's settings are not modified
    own = copy.deepcopy(original)
    own["optim"]["classifier_weight_decay"] = 0.03
    assert variants.with_variant(own, "wd", 0.01)["optim"]["classifier_weight_decay"] is None
    both = variants.with_variant(variants.with_variant(own, "wd", 0.01), "wd-classifier", 0.1)
    assert both["optim"]["classifier_weight_decay"] == 0.1 and own["optim"]["weight_decay"] == 1e-4
    assert variants.with_variant(original, "centered", 0.3) is original


@pytest.mark.parametrize("text", ["bogus", "raw=3", "wd", "lambda=x", "gate-loss-only=1"])
def test_a_bad_variant_is_a_one_line_error(variants, text):
    with pytest.raises(SystemExit) as err:
        variants.parse_variant(text)
    message = str(err.value)
    assert message.startswith(f"error: variant {text!r}") and "\n" not in message


def closing_pulls(line: str) -> list[float]:
    return [float(p.split("/")[1]) for p in line.split("pulls open/close ")[1].split()]


def test_gate_pulls_reports_every_class(variants):
    net = small_integral()
    feats = features(net)
    line = variants.gate_pulls(net, feats, gate_weight=1.5)
    assert line.startswith("train CE ")
    closing = closing_pulls(line)
    assert len(closing) == CLASSES
    assert all(c > 0 for c in closing)  # L_gate always pushes the gate shut
    assert closing_pulls(variants.gate_pulls(net, feats, gate_weight=0.0)) == [0.0] * CLASSES


def test_combinations_apply_every_part_and_refuse_two_layer_changes(variants):
    assert variants.parse_combination("scalar+warmup=1+lambda=5") == [
        ("scalar", 0.0),
        ("warmup", 1.0),
        ("lambda", 5.0),
    ]
    with pytest.raises(SystemExit, match="at most one of"):
        variants.parse_combination("scalar+centered=0.3")
    with pytest.raises(SystemExit, match="variant 'bogus'"):
        variants.parse_combination("scalar+bogus")


def test_warmup_eases_the_gate_loss_in(variants):
    # Same weights, same batches, lambda 1.5: ramped in from 0, L_gate pushes the gate's bias
    # down less than at full weight from the first step.
    bias = {}
    for kind, value in (("raw", 0.0), ("warmup", 1.0)):
        net = small_integral()
        feats = features(net, videos=4)
        run = variants.with_variant(settings(1.5, epochs=2), kind, value)
        variants.train_head(net, feats, run)
        bias[kind] = net.cgb.conv.bias.mean().item()
    assert bias["warmup"] > bias["raw"]


def test_run_folders_name_every_stage2_setting_so_old_runs_are_never_reused(variants):
    import out_of_context as ooc

    tags = {
        ooc.stage2_tag(
            variant,
            lam,
            norm,
            shape or "frame",
            1.0 if ramp else 0.0,
            ooc.CLASSIFIER_DECAY_STAGE2 if own else None,
        )
        for _, variant, lam, norm, shape, ramp, own in ooc.STAGE2
    }
    assert len(tags) == len(ooc.STAGE2)  # every row trains in its own folder
    # A run made before the classifier had its own decay keeps its old name, and is the row
    # that keeps the paper's single decay; the default run of the variants script is a new one.
    assert ooc.stage2_tag("integral", 1.5, "none", "frame", 1.0, None) == "integral_1.5_frame_wu1"
    assert variants.RUN_DIR == "integral_1.5_channel_cwd0.03"
    assert ooc._invocations([{"wall_minutes": 29.16}]) == ""
    assert "(29.2 + 10.2 min" in ooc._invocations(
        [{"wall_minutes": 29.16}, {"wall_minutes": 10.17}]
    )
