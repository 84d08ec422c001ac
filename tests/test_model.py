"""Model tests: torchvision names, TSM, streams, integration, losses, stage 2, checkpoints.

Tensors are tiny (RGB 32-64 px, rasters 8-16 px, T = 2..4) so that the file runs in about a
minute on one core; the one 224/56 check uses ResNet-18 with B = T = 1.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import model
from model.checkpoint import CheckpointError
from model.integral import ChannelGateBlock, TemporalConvBlock
from model.resnet import BasicBlock, Bottleneck

K2B = 5  # pose channels (K + 2B) of the tiny models
CLASSES = ["drink", "jump", "wave"]


@pytest.fixture(autouse=True)
def _one_thread():
    # The test machines are shared and small; one thread avoids oversubscription.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)


def tiny_inputs(b: int = 2, t: int = 2, tp: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(b, t, 3, 32, 32), torch.randn(b, tp, K2B, 8, 8)


def tiny(variant: str, **kw) -> model.ActionModel:
    args = dict(appearance_depth=18, pose_depth=18, clip_len=2, pose_clip_len=4)
    args.update(kw)
    return model.build(variant, len(CLASSES), K2B, **args)


# ----------------------------------------------------------------------------------------------
# ResNet: torchvision names, counts, ImageNet loading

# Representative torchvision resnet18 state-dict names (torchvision.models.resnet18()).
TORCHVISION_RESNET18_KEYS = [
    "conv1.weight",
    "bn1.weight",
    "bn1.bias",
    "bn1.running_mean",
    "bn1.running_var",
    "bn1.num_batches_tracked",
    "layer1.0.conv1.weight",
    "layer1.0.bn1.weight",
    "layer1.0.bn1.running_var",
    "layer1.0.conv2.weight",
    "layer1.0.bn2.bias",
    "layer1.1.conv1.weight",
    "layer1.1.bn2.num_batches_tracked",
    "layer2.0.conv1.weight",
    "layer2.0.bn1.running_mean",
    "layer2.0.downsample.0.weight",
    "layer2.0.downsample.1.weight",
    "layer2.0.downsample.1.bias",
    "layer2.0.downsample.1.running_mean",
    "layer2.0.downsample.1.running_var",
    "layer2.0.downsample.1.num_batches_tracked",
    "layer2.1.conv2.weight",
    "layer3.0.conv1.weight",
    "layer3.0.downsample.0.weight",
    "layer3.1.bn1.weight",
    "layer4.0.conv1.weight",
    "layer4.0.downsample.0.weight",
    "layer4.0.downsample.1.running_var",
    "layer4.1.conv2.weight",
    "layer4.1.bn2.weight",
    "layer4.1.bn2.bias",
    "layer4.1.bn2.running_mean",
    "layer4.1.bn2.running_var",
    "layer4.1.bn2.num_batches_tracked",
    "fc.weight",
    "fc.bias",
]


def test_resnet18_state_dict_has_torchvision_names():
    keys = list(model.ResNet(18, num_classes=1000).state_dict())
    # 1 + 5 (stem) + 8 blocks x 12 + 3 downsamples x 6 + 2 (fc) = 122.
    assert len(keys) == 122
    assert keys[:7] == TORCHVISION_RESNET18_KEYS[:7]  # same order as torchvision
    assert keys[-2:] == ["fc.weight", "fc.bias"]
    missing = [k for k in TORCHVISION_RESNET18_KEYS if k not in keys]
    assert not missing
    # ResNet-18's layer1 keeps 64 channels: no downsample there; TSM adds no state.
    assert "layer1.0.downsample.0.weight" not in keys
    assert not [k for k in keys if "shift" in k]


def test_resnet_parameter_counts_match_torchvision():
    def count(net: nn.Module) -> int:
        return sum(p.numel() for p in net.parameters())

    assert count(model.ResNet(50)) == 23_508_032  # torchvision resnet50 minus fc
    assert count(model.ResNet(50, num_classes=1000)) == 25_557_032
    assert count(model.ResNet(18, num_classes=1000)) == 11_689_512
    r50 = model.ResNet(50, num_classes=1000).state_dict()
    assert len(r50) == 320
    assert {
        "layer1.0.conv3.weight",
        "layer1.0.downsample.0.weight",
        "layer4.2.bn3.running_mean",
    } <= (r50.keys())
    assert r50["layer1.0.conv1.weight"].shape == (64, 64, 1, 1)
    assert r50["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)  # v1.5: stride in conv2


def test_imagenet_weights_load_into_both_streams(tmp_path):
    src = model.ResNet(18, num_classes=1000)
    for p in src.parameters():
        nn.init.normal_(p)
    sd = src.state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(sd, path)

    app = model.AppearanceStream(18, clip_len=2)
    model.load_imagenet_weights(app, path)
    own = app.backbone.state_dict()
    assert all(torch.equal(own[k], sd[k]) for k in own)

    # Pose stream: no stem; a DDP-style prefix inside a {"state_dict": ...} wrapper also loads.
    pose = model.PoseStream(K2B, 18, clip_len=2, pose_clip_len=4)
    front = pose.front[0].weight.clone()
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, wrapped)
    model.load_imagenet_weights(pose, wrapped)
    assert torch.equal(pose.backbone.layer4[1].conv2.weight, sd["layer4.1.conv2.weight"])
    assert torch.equal(pose.front[0].weight, front)
    assert "conv1.weight" not in pose.backbone.state_dict()


def test_imagenet_weights_mismatch_is_one_line_error(tmp_path):
    sd = model.ResNet(18, num_classes=1000).state_dict()
    del sd["layer1.0.conv1.weight"]
    sd["layer9.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    net = model.ResNet(18)
    before = net.layer2[0].conv1.weight.clone()
    with pytest.raises(ValueError) as err:
        model.load_imagenet_weights(net, path)
    msg = str(err.value)
    assert "\n" not in msg
    assert "missing keys layer1.0.conv1.weight" in msg and "unexpected keys layer9.weight" in msg
    assert torch.equal(net.layer2[0].conv1.weight, before)  # nothing half-loaded

    # A ResNet-18 file does not fit a ResNet-34 (it lacks the extra blocks).
    torch.save(model.ResNet(18).state_dict(), path)
    with pytest.raises(ValueError, match=r"ResNet-34: missing keys layer1\.2\.conv1\.weight"):
        model.load_imagenet_weights(model.ResNet(34), path)
    with pytest.raises(ValueError, match="no such file"):
        model.load_imagenet_weights(net, tmp_path / "absent.pth")


# ----------------------------------------------------------------------------------------------
# Temporal shift


def _coded_clip(b: int, t: int, c: int) -> torch.Tensor:
    # Every element names its clip, frame and channel: 1000 b + 100 t + c + 1 (never zero).
    bb, tt, cc = torch.meshgrid(torch.arange(b), torch.arange(t), torch.arange(c), indexing="ij")
    x = (1000 * bb + 100 * tt + cc + 1).float()
    return x.reshape(b * t, c, 1, 1).expand(b * t, c, 2, 3).contiguous()


@pytest.mark.parametrize("t", [1, 3, 4])
def test_temporal_shift_moves_exactly_the_stated_channels(t):
    b, c = 2, 16  # fold = 2: channels 0-1 forward, 2-3 backward, 4-15 stay
    x = _coded_clip(b, t, c)
    y = model.temporal_shift(x, t).view(b, t, c, 2, 3)
    x5 = x.view(b, t, c, 2, 3)
    for bi in range(b):
        for ti in range(t):
            for ci in range(c):
                got = y[bi, ti, ci]
                if ci < 2:  # frame t gets frame t - 1's; zeros at the clip start
                    want = x5[bi, ti - 1, ci] if ti > 0 else torch.zeros(2, 3)
                elif ci < 4:  # frame t gets frame t + 1's; zeros at the clip end
                    want = x5[bi, ti + 1, ci] if ti < t - 1 else torch.zeros(2, 3)
                else:
                    want = x5[bi, ti, ci]
                assert torch.equal(got, want), (bi, ti, ci)
    with pytest.raises(ValueError, match="whole number"):
        model.temporal_shift(x, t + 1 if t > 1 else 5)


def test_temporal_shift_keeps_channels_last_and_gradients():
    x = torch.randn(6, 16, 3, 3).to(memory_format=torch.channels_last).requires_grad_()
    y = model.temporal_shift(x, 3)
    assert y.is_contiguous(memory_format=torch.channels_last)
    y.sum().backward()
    # Each shifted-out value (first fold of the last frame, second fold of the first frame)
    # reaches nothing: its gradient is zero; everything else gets gradient 1.
    g = x.grad.view(2, 3, 16, 3, 3)
    assert torch.all(g[:, 2, :2] == 0) and torch.all(g[:, 0, 2:4] == 0)
    assert torch.all(g[:, :2, :2] == 1) and torch.all(g[:, :, 4:] == 1)


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_shift_is_on_the_residual_branch_only(block):
    t = 2
    blk = BasicBlock(16, 16) if block == "basic" else Bottleneck(16, 4)
    blk.eval()
    for m in blk.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.running_var, 0.5, 1.5)
    x = torch.randn(2 * t, 16, 5, 5)
    with torch.no_grad():
        s = model.temporal_shift(x, t)
        if block == "basic":
            branch = blk.bn2(blk.conv2(F.relu(blk.bn1(blk.conv1(s)))))
        else:
            h = F.relu(blk.bn2(blk.conv2(F.relu(blk.bn1(blk.conv1(s))))))
            branch = blk.bn3(blk.conv3(h))
        assert torch.allclose(blk(x, t), F.relu(branch + x), atol=1e-5)
        # With the branch silenced, the output is the unshifted input: identity path untouched.
        last_bn = blk.bn2 if block == "basic" else blk.bn3
        nn.init.zeros_(last_bn.weight)
        nn.init.zeros_(last_bn.bias)
        assert torch.equal(blk(x, t), F.relu(x))


# ----------------------------------------------------------------------------------------------
# Streams


@pytest.mark.parametrize("depth,channels", [(18, 512), (34, 512), (50, 2048)])
def test_stream_shapes_for_every_depth(depth, channels):
    app = model.AppearanceStream(depth, clip_len=2).eval()
    pose = model.PoseStream(K2B, depth, clip_len=2, pose_clip_len=4).eval()
    with torch.no_grad():
        assert app(torch.randn(1, 2, 3, 64, 64)).shape == (1, 2, channels)
        assert pose(torch.randn(1, 4, K2B, 16, 16)).shape == (1, 2, channels)
        assert app.feature_maps(torch.randn(1, 2, 3, 64, 64)).shape == (2, channels, 2, 2)
    with pytest.raises(ValueError, match="channels per frame"):
        pose(torch.randn(1, 4, K2B + 1, 16, 16))
    with pytest.raises(ValueError, match="does not pool"):
        pose(torch.randn(1, 3, K2B, 16, 16))


def test_pose_stream_pools_consecutive_frames():
    pose = model.PoseStream(K2B, 18, clip_len=2, pose_clip_len=6).eval()  # 6 -> 2: groups of 3
    x = torch.randn(2, 6, K2B, 8, 8)
    with torch.no_grad():
        per_frame = pose.feature_maps(x).mean(dim=(2, 3)).view(2, 6, -1)
        out = pose(x)
    assert torch.allclose(out[:, 0], per_frame[:, 0:3].mean(1), atol=1e-6)
    assert torch.allclose(out[:, 1], per_frame[:, 3:6].mean(1), atol=1e-6)


def test_pose_stream_spatial_size_equals_appearance_at_224_and_56():
    app = model.AppearanceStream(18, clip_len=1).eval()
    pose = model.PoseStream(52, 18, clip_len=1, pose_clip_len=1).eval()
    with torch.no_grad():
        a = app.feature_maps(torch.randn(1, 1, 3, 224, 224))
        p = pose.feature_maps(torch.randn(1, 1, 52, 56, 56))
    assert a.shape == p.shape == (1, 512, 7, 7)


# ----------------------------------------------------------------------------------------------
# Variants, integration, losses


@pytest.mark.parametrize("variant", model.VARIANTS)
def test_every_variant_builds_and_returns_log_probabilities(variant):
    net = tiny(variant)
    rgb, pose = tiny_inputs()
    if variant == "appearance":
        pose = None
    elif variant == "pose":
        rgb = None
    out = net(rgb, pose)
    assert out["logits"].shape == (2, len(CLASSES))
    assert torch.allclose(out["logits"].exp().sum(1), torch.ones(2), atol=1e-5)
    gated = variant in ("integral", "appearance_gate", "both_gate", "no_gate_loss")
    assert net.has_gate == gated and set(out) == (
        {"logits", "gate", "gate_logits"} if gated else {"logits"}
    )
    if gated:
        assert out["gate"].shape == out["gate_logits"].shape == (2, 2, 512)
        assert torch.equal(out["gate"], torch.sigmoid(out["gate_logits"]))
    assert net.uses_gate_loss == (variant in ("integral", "appearance_gate", "both_gate"))
    assert net.config["variant"] == variant
    if variant in ("appearance", "pose"):
        with pytest.raises(ValueError, match="needs the"):
            net(None, None)


def test_build_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown variant"):
        model.build("late_fusion", 3, K2B)
    with pytest.raises(ValueError, match="multiple of clip_len"):
        model.build("pose", 3, K2B, pose_depth=18, clip_len=3, pose_clip_len=8)
    # The appearance stream never pools pose frames: any clip length builds.
    assert (
        model.build("appearance", 3, None, appearance_depth=18, clip_len=3).config["clip_len"] == 3
    )
    with pytest.raises(ValueError, match="pose_channels"):
        model.build("integral", 3, None, appearance_depth=18)
    with pytest.raises(ValueError, match="appearance_depth"):
        model.build("appearance", 3, None, appearance_depth=101)


def test_integration_follows_the_paper_equations():
    net = tiny("integral").eval()
    # Spread the gates away from 0.5 and the class scores away from uniform, so that a wrong
    # formula shows.
    nn.init.normal_(net.cgb.conv.bias, std=2.0)
    nn.init.normal_(net.classifier.weight, std=0.1)
    rgb, pose = tiny_inputs()
    with torch.no_grad():
        out = net(rgb, pose)
        f_a, f_p = net.appearance(rgb), net.pose(pose)
        # TCB_A by hand: conv1d with k = 1 is a per-frame matrix product.
        lin = f_a @ net.tcb_a.conv.weight[..., 0].T + net.tcb_a.conv.bias
        norm = net.tcb_a.norm
        a = F.relu(F.layer_norm(lin, (512,), norm.weight, norm.bias))
        p = net.tcb_p(f_p)
        z = net.cgb(f_p)  # pose-driven
        g = torch.sigmoid(z)
        frame_logits = net.classifier(g * a + (1 - g) * p)
        probs = F.softmax(frame_logits, dim=-1).mean(1)
    assert torch.allclose(net.tcb_a(f_a), a, atol=1e-5)
    assert torch.allclose(out["gate_logits"], z, atol=1e-6)
    assert torch.allclose(out["logits"], probs.log(), atol=1e-5)
    assert isinstance(net.tcb_a, TemporalConvBlock) and isinstance(net.cgb, ChannelGateBlock)
    # The official code's gate: a linear layer with bias, no BatchNorm.
    assert net.cgb.conv.in_channels == 512 and net.cgb.conv.bias is not None
    assert net.cgb.bn is None and net.config["gate_norm"] == "none"
    # z by hand: one matrix product per frame plus the bias.
    assert torch.allclose(z, f_p @ net.cgb.conv.weight[..., 0].T + net.cgb.conv.bias, atol=1e-5)
    paper = tiny("integral", gate_norm="batchnorm")
    assert isinstance(paper.cgb.bn, nn.BatchNorm1d) and paper.cgb.conv.bias is None


@pytest.mark.parametrize("bias,frozen_input", [(60.0, "pose"), (-60.0, "rgb")])
def test_gate_weighs_appearance(bias, frozen_input):
    # Pin G at 1 (bias +60: only appearance may matter) or at 0 (bias -60: only pose) through
    # the CGB's bias; the classifier gets larger weights so that inputs show.
    net = tiny("integral").eval()
    nn.init.zeros_(net.cgb.conv.weight)
    nn.init.constant_(net.cgb.conv.bias, bias)
    nn.init.normal_(net.classifier.weight, std=0.1)
    rgb, pose = tiny_inputs()
    rgb2, pose2 = tiny_inputs()
    with torch.no_grad():
        base = net(rgb, pose)["logits"]
        changed = net(rgb, pose2)["logits"] if frozen_input == "pose" else net(rgb2, pose)["logits"]
        # The other input still matters.
        moved = net(rgb2, pose)["logits"] if frozen_input == "pose" else net(rgb, pose2)["logits"]
    assert torch.allclose(base, changed, atol=1e-6)
    assert not torch.allclose(base, moved, atol=1e-4)


@pytest.mark.parametrize(
    "variant,rgb_moves,pose_moves",
    [
        ("integral", False, True),
        ("no_gate_loss", False, True),
        ("appearance_gate", True, False),
        ("both_gate", True, True),
    ],
)
def test_gate_reads_its_driving_stream(variant, rgb_moves, pose_moves):
    net = tiny(variant).eval()
    rgb, pose = tiny_inputs()
    rgb2, pose2 = tiny_inputs()
    with torch.no_grad():
        g = net(rgb, pose)["gate"]
        assert torch.equal(g, net(rgb2, pose)["gate"]) != rgb_moves
        assert torch.equal(g, net(rgb, pose2)["gate"]) != pose_moves


def test_feature_fuse_concatenates_then_projects():
    ff = tiny("feature_fuse")
    assert ff.cgb is None and ff.fuse[0].in_features == 1024 and ff.fuse[0].out_features == 512


def test_non_resnet_layers_start_from_small_gaussians():
    net = tiny("integral", appearance_depth=18)
    for w in (net.tcb_a.conv.weight, net.tcb_p.conv.weight, net.pose.front[0].weight):
        assert abs(w.std().item() - 0.001) < 0.0002  # N(0, 0.001), section 3.5
    # Gate and classifier as the official code's linear layers: N(0, 0.01).
    for w in (net.cgb.conv.weight, net.classifier.weight):
        assert abs(w.std().item() - 0.01) < 0.002
    assert torch.all(net.classifier.bias == 0) and torch.all(net.cgb.conv.bias == 0)
    stage1 = tiny("pose")
    assert abs(stage1.classifier.weight.std().item() - 0.01) < 0.002


def test_gate_loss_matches_direct_formula_and_stays_finite():
    g = torch.rand(2, 3, 512) * 0.99
    assert torch.allclose(model.gate_loss(g), (-torch.log(1 - g)).mean(), rtol=1e-5)
    assert math.isfinite(model.gate_loss(torch.ones(4)).item())

    z = torch.tensor([0.0, 5.0, 100.0, 1000.0], requires_grad=True)
    want = torch.tensor([math.log(2.0), math.log1p(math.exp(5.0)), 100.0, 1000.0]).mean()
    got = model.gate_loss_from_logits(z)
    assert torch.allclose(got, want)
    got.backward()
    assert torch.allclose(z.grad, torch.sigmoid(z.detach()) / 4)  # finite at z = 1000
    zm = torch.linspace(-8, 8, 17)
    assert torch.allclose(model.gate_loss_from_logits(zm), model.gate_loss(torch.sigmoid(zm)))


def test_integral_loss_terms_and_no_gate_loss_variant():
    rgb, pose = tiny_inputs()
    y = torch.tensor([0, 2])
    net = tiny("integral")
    out = net(rgb, pose)
    total, ce, gate_term = net.integral_loss(out, y, gate_weight=1.5)
    assert torch.allclose(ce, -out["logits"][torch.arange(2), y].mean())
    assert torch.allclose(gate_term, F.softplus(out["gate_logits"]).mean())
    assert torch.allclose(total, ce + 1.5 * gate_term)

    ngl = tiny("no_gate_loss")
    out = ngl(rgb, pose)
    total, ce, gate_term = ngl.integral_loss(out, y)
    assert gate_term > 0 and torch.equal(total, ce)  # reported, not trained
    total, ce, gate_term = model.integral_loss(tiny("no_gate")(rgb, pose), y)
    assert gate_term == 0 and torch.equal(total, ce)


def test_frame_average_is_stable_and_exact():
    logits = torch.randn(3, 4, 7) * 5
    want = F.softmax(logits, -1).mean(1).log()
    assert torch.allclose(model.frame_average_log_probs(logits), want, atol=1e-5)
    huge = torch.tensor([[[1e4, 0.0], [0.0, 1e4]]])  # probabilities (1, 0) and (0, 1)
    assert torch.allclose(model.frame_average_log_probs(huge), torch.full((1, 2), -math.log(2)))


def test_a_few_sgd_steps_lower_the_loss():
    net = tiny("integral")
    rgb, pose = tiny_inputs(b=4)
    y = torch.tensor([0, 1, 2, 0])
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(5):
        total, _, _ = net.integral_loss(net(rgb, pose), y)
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(total.item())
    assert losses[-1] < losses[0] - 0.2, losses


# ----------------------------------------------------------------------------------------------
# Checkpoints and stage 2


def contract(**over) -> dict:
    c = {
        "layout": "coco17",
        "joint_names": ["nose", "neck"],
        "bones": [(0, 1)],
        "classes": list(CLASSES),
        "raster": {"sigma": 0.5, "paf_width": 1.0},
        "input_size": 32,
        "clip_len": 2,
        "stride": 8,
        "pose_clip_len": 4,
        "pose_stride": 2,
        "frame_stride": 2,
        "normalisation": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "scale": 1 / 255},
    }
    c.update(over)
    return c


APPEARANCE_ONLY = ("layout", "joint_names", "bones", "raster", "pose_clip_len", "pose_stride")


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    torch.manual_seed(1)
    d = tmp_path_factory.mktemp("stage1")
    app, pose = tiny("appearance"), tiny("pose")
    for net in (app, pose):  # make the running statistics differ from a fresh model's
        with torch.no_grad():
            net(*tiny_inputs())
    a_contract = {k: v for k, v in contract().items() if k not in APPEARANCE_ONLY}
    a_contract["normalisation"] = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    model.save_checkpoint(d / "a.pt", model=app, model_config=app.config, contract=a_contract)
    model.save_checkpoint(d / "p.pt", model=pose, model_config=pose.config, contract=contract())
    return d, app.eval(), pose.eval()


def test_stage2_copies_and_freezes_the_streams(stage1):
    d, app, pose = stage1
    net = model.build_integral_from_stage1(d / "a.pt", d / "p.pt", "integral")
    assert net.variant == "integral" and net.streams_frozen
    for name, v in app.appearance.state_dict().items():
        assert torch.equal(net.appearance.state_dict()[name], v)
    for name, v in pose.pose.state_dict().items():
        assert torch.equal(net.pose.state_dict()[name], v)
    # The merged contract has the pose fields and the appearance run's normalisation.
    assert net.contract["layout"] == "coco17" and net.contract["normalisation"]["std"][0] == 0.229

    net.train()
    assert net.training and net.tcb_a.training and net.cgb.training
    bns = [m for m in net.appearance.modules() if isinstance(m, nn.BatchNorm2d)]
    bns += [m for m in net.pose.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    stats = bns[0].running_mean.clone()

    rgb, x = tiny_inputs()
    total, _, _ = net.integral_loss(net(rgb, x), torch.tensor([0, 1]))
    total.backward()
    assert torch.equal(bns[0].running_mean, stats)
    for name, p in net.named_parameters():
        if name.startswith(("appearance.", "pose.")):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name


def test_stage2_checkpoint_round_trip_and_score_average(stage1, tmp_path):
    d, app, pose = stage1
    net = model.build_integral_from_stage1(d / "a.pt", d / "p.pt", "both_gate")
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    path = tmp_path / "run" / "last.pt"
    model.save_checkpoint(
        path,
        model=nn.DataParallel(net),  # wrappers are unwrapped: no "module." prefix
        model_config=net.config,
        contract=net.contract,
        optimizer=opt,
        epoch=3,
        metrics={"top1": 12.5},
        rng=model.capture_rng_state(),
    )
    assert os.listdir(path.parent) == ["last.pt"]  # no temporary file left behind
    ckpt = model.load_checkpoint(path)
    assert ckpt["epoch"] == 3 and ckpt["metrics"] == {"top1": 12.5}
    assert ckpt["model_config"]["variant"] == "both_gate" and ckpt["streams_frozen"]
    assert not [k for k in ckpt["state_dict"] if k.startswith("module.")]
    assert "param_groups" in ckpt["optimizer"]
    again = model.build_from_checkpoint(path)
    assert again.streams_frozen and not again.appearance.backbone.conv1.weight.requires_grad
    rgb, x = tiny_inputs()
    with torch.no_grad():
        assert torch.allclose(again.eval()(rgb, x)["logits"], net.eval()(rgb, x)["logits"])

    avg = model.build_integral_from_stage1(d / "a.pt", d / "p.pt", "score_average").eval()
    assert not any(p.requires_grad for p in avg.parameters())
    with torch.no_grad():
        want = (app(rgb, None)["logits"].exp() + pose(None, x)["logits"].exp()) / 2
        assert torch.allclose(avg(rgb, x)["logits"], want.log(), atol=1e-5)


@pytest.mark.parametrize(
    "change,match",
    [
        ({"classes": ["drink", "jump", "wave!"]}, "'classes'.*index 2"),
        ({"frame_stride": 4}, "'frame_stride'"),
        ({"input_size": 48}, "'input_size'"),
        ({"stride": 4}, "'stride'"),
    ],
)
def test_stage2_refuses_disagreeing_contracts(stage1, tmp_path, change, match):
    d, _, pose = stage1
    bad = tmp_path / "p_bad.pt"
    model.save_checkpoint(bad, model=pose, model_config=pose.config, contract=contract(**change))
    with pytest.raises(ValueError, match=match) as err:
        model.build_integral_from_stage1(d / "a.pt", bad)
    assert "\n" not in str(err.value)


def test_stage2_refuses_wrong_stage_and_missing_fields(stage1, tmp_path):
    d, _, pose = stage1
    with pytest.raises(ValueError, match="is a model of variant 'pose'"):
        model.build_integral_from_stage1(d / "p.pt", d / "p.pt")
    lacking = tmp_path / "p_lacking.pt"
    c = contract()
    del c["input_size"]
    model.save_checkpoint(lacking, model=pose, model_config=pose.config, contract=c)
    with pytest.raises(ValueError, match="pose has no 'input_size'"):
        model.build_integral_from_stage1(d / "a.pt", lacking)
    with pytest.raises(ValueError, match="stage-2 variant"):
        model.build_integral_from_stage1(d / "a.pt", d / "p.pt", "pose")


def test_check_contracts_normalises_types():
    import numpy as np

    a = contract(bones=np.array([[0, 1]]), input_size=np.int64(32))
    model.check_contracts(a, contract())  # arrays, tuples and lists compare by value
    with pytest.raises(ValueError, match="'layout'"):
        model.check_contracts(contract(layout="openpose18"), contract())


def test_load_checkpoint_errors_are_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        model.load_checkpoint(tmp_path / "nothing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable or corrupt") as err:
        model.load_checkpoint(corrupt)
    assert "\n" not in str(err.value)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": 1}, foreign)
    with pytest.raises(CheckpointError, match="not a checkpoint of this project"):
        model.load_checkpoint(foreign)
    # Weights that do not fit the recorded model are refused by name.
    net = tiny("pose")
    path = tmp_path / "pose.pt"
    model.save_checkpoint(path, model=net, model_config=net.config, contract=contract())
    ckpt = model.load_checkpoint(path)
    ckpt["state_dict"].pop("classifier.bias")
    with pytest.raises(CheckpointError, match="missing keys classifier.bias"):
        model.build_from_checkpoint(ckpt)


# ----------------------------------------------------------------------------------------------
# The gate can move (issue 12): no BatchNorm by default, as the official code


def _train_gate_alone(gate_norm: str, steps: int = 50) -> tuple[model.ActionModel, torch.Tensor]:
    """``steps`` SGD steps (lr 0.01, momentum 0.9) of L_gate alone on the integration head, fed
    non-negative 512-wide features (as ResNet-18's pooled ReLU outputs are)."""
    torch.manual_seed(0)
    net = tiny("integral", gate_norm=gate_norm)
    net.freeze_streams()
    net.train()
    g = torch.Generator().manual_seed(1)
    f_a = torch.randn(16, 2, 512, generator=g).abs()
    f_p = torch.randn(16, 2, 512, generator=g).abs()
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    for _ in range(steps):
        loss = model.gate_loss(net.head(f_a, f_p)["gate"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net, f_p


def test_gate_loss_alone_closes_the_gate():
    net, f_p = _train_gate_alone("none")
    with torch.no_grad():
        out = net.head(torch.zeros_like(f_p), f_p)
    assert out["gate"].mean().item() < 0.4
    # The paper's text (BatchNorm in the gate) under the same steps: the mean stays at 0.5.
    paper, f_p = _train_gate_alone("batchnorm")
    with torch.no_grad():
        assert abs(paper.head(torch.zeros_like(f_p), f_p)["gate"].mean().item() - 0.5) < 0.02


def test_gate_batch_mean_is_not_pinned_to_a_parameter():
    torch.manual_seed(0)
    f_p = torch.randn(8, 2, 512).abs()
    shifted = 3.0 * f_p + 1.0
    for gate_norm in ("none", "batchnorm"):
        cgb = tiny("integral", gate_norm=gate_norm).train().cgb
        nn.init.normal_(cgb.conv.weight, std=0.05)
        with torch.no_grad():
            mean_a = cgb(f_p).mean(dim=(0, 1))
            mean_b = cgb(shifted).mean(dim=(0, 1))
        if gate_norm == "none":
            # Each channel's batch mean follows the input and the weights.
            assert (mean_a - mean_b).abs().min() > 1e-3
        else:
            # BatchNorm in training mode: every batch's mean is its shift, whatever the input.
            assert torch.allclose(mean_a, cgb.bn.bias, atol=1e-5)
            assert torch.allclose(mean_b, cgb.bn.bias, atol=1e-5)


def test_gate_norm_is_recorded_and_rebuilt(tmp_path):
    net = tiny("integral", gate_norm="batchnorm")
    model.save_checkpoint(tmp_path / "g.pt", model=net, model_config=net.config, contract={})
    again = model.build_from_checkpoint(tmp_path / "g.pt")
    assert again.config["gate_norm"] == "batchnorm" and isinstance(again.cgb.bn, nn.BatchNorm1d)
    # A checkpoint written before gate_norm was recorded always had the BatchNorm.
    old = model.load_checkpoint(tmp_path / "g.pt")
    del old["model_config"]["gate_norm"]
    assert model.build_from_checkpoint(old).cgb.bn is not None
    with pytest.raises(ValueError, match="gate_norm"):
        tiny("integral", gate_norm="layernorm")


def test_frame_gate_weighs_every_channel_alike_and_is_rebuilt(tmp_path):
    net = tiny("integral", gate_shape="frame").eval()
    nn.init.normal_(net.cgb.conv.weight, std=0.05)
    f_a, f_p = torch.rand(3, 2, 512), torch.rand(3, 2, 512)
    with torch.no_grad():
        out = net.head(f_a, f_p)
        g = torch.sigmoid(net.cgb.conv(f_p.transpose(1, 2)).transpose(1, 2))
        fused = g * net.tcb_a(f_a) + (1 - g) * net.tcb_p(f_p)
        expected = model.frame_average_log_probs(net.classifier(fused))
    assert out["gate"].shape == (3, 2, 1) and torch.allclose(out["gate"], g)
    assert torch.allclose(out["logits"], expected, atol=1e-6)
    model.save_checkpoint(tmp_path / "f.pt", model=net, model_config=net.config, contract={})
    again = model.build_from_checkpoint(tmp_path / "f.pt")
    assert again.config["gate_shape"] == "frame" and again.cgb.conv.out_channels == 1
    # Checkpoints written before gate_shape was recorded have the paper's gate per channel.
    old = model.load_checkpoint(tmp_path / "f.pt")
    del old["model_config"]["gate_shape"]
    with pytest.raises(model.CheckpointError, match="weights do not fit"):
        model.build_from_checkpoint(old)
    with pytest.raises(ValueError, match="gate_shape"):
        tiny("integral", gate_shape="pixel")


def _gate_where_pose_cannot_decide(gate_shape: str, warmup: float) -> tuple[float, float, float]:
    """Stage 2's head (CE + 1.5 L_gate, lambda ramped over ``warmup`` of 300 SGD steps) on
    features where classes 0 and 1 share their pose features and differ only in appearance, and
    class 2's appearance says nothing. Returns (mean G of classes 0 and 1, of class 2, top-1)."""
    from train.fit import ramped_gate_weight

    torch.manual_seed(0)
    net = model.build("integral", 3, 8, appearance_depth=18, pose_depth=18, clip_len=2,
                      pose_clip_len=2, gate_shape=gate_shape)  # fmt: skip
    net.freeze_streams()
    net.train()
    g = torch.Generator().manual_seed(1)
    pose_of = torch.rand(3, 512, generator=g)
    pose_of[1] = pose_of[0]  # the same motion
    scene_of = torch.rand(3, 512, generator=g)
    scene_of[2] = scene_of[:2].mean(0)  # a scene between the others'

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % 3
        noise = 0.3 * torch.randn(2, n, 2, 512, generator=g)
        return (scene_of[y][:, None] + noise[0]).relu(), (pose_of[y][:, None] + noise[1]).relu(), y

    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.03, momentum=0.9)
    steps = 300
    for step in range(steps):
        f_a, f_p, y = batch(24)
        loss, _, _ = net.integral_loss(
            net.head(f_a, f_p), y, ramped_gate_weight(1.5, warmup, step / steps, 1)
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        f_a, f_p, y = batch(300)
        out = net.eval().head(f_a, f_p)
    gate = out["gate"].mean(dim=(1, 2))
    top1 = (out["logits"].argmax(1) == y).float().mean().item()
    return gate[y < 2].mean().item(), gate[y == 2].mean().item(), top1


def test_a_frame_gate_with_warmup_opens_where_pose_cannot_decide():
    # docs/model.md, "Measured: a gate per frame": the paper's Table 5 claim in miniature.
    scene_only, pose_decides, top1 = _gate_where_pose_cannot_decide("frame", warmup=1.0)
    assert top1 == 1.0 and scene_only > 0.02 and scene_only > 10 * pose_decides
    # L_gate in full from the first step shuts the frame gate before the classifier reads the
    # scene: the pair that only appearance tells apart is then lost.
    scene_only, pose_decides, top1 = _gate_where_pose_cannot_decide("frame", warmup=0.0)
    assert max(scene_only, pose_decides) < 0.01 and top1 < 0.8
    # One gate per channel: the classifier reads the scene through a few open channels, and
    # the mean gate has no class pattern at all, warmup or not.
    scene_only, pose_decides, top1 = _gate_where_pose_cannot_decide("channel", warmup=1.0)
    assert top1 == 1.0 and abs(scene_only - pose_decides) < 0.02


def test_head_on_stream_features_equals_forward():
    for variant in ("integral", "no_gate", "feature_fuse", "score_average", "pose"):
        net = tiny(variant).eval()
        nn.init.normal_(net.classifier.weight if hasattr(net, "classifier") else
                        net.pose_classifier.weight, std=0.1)  # fmt: skip
        rgb, pose = tiny_inputs()
        with torch.no_grad():
            full = net(rgb, pose)
            head = net.head(*net.features(rgb, pose))
        assert full.keys() == head.keys()
        for k in full:
            assert torch.equal(full[k], head[k]), (variant, k)
