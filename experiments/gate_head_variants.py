"""Stage-2 head variants on an experiment run's cached features: which gate ranks the classes?

    python experiments/gate_head_variants.py --work /tmp/integralaction-ooc-tuning \
        raw wd=0.01 centered=0.3 direction=5 dropout-classifier=0.5

For each seed of an ``experiments/out_of_context.py`` run, this script trains the IntegralAction
(lambda 1.5) head with the official code's gate, one per channel, again (TCBs, gate, classifier;
the streams stay frozen) on the run's cached training views. It uses that run's own stage-2
settings, read from ``seed<N>/<run>/config.json`` (epochs, lr, batch, weight decays, lambda,
seed; ``--run``, by default ``integral_1.5_channel_cwd0.03``, the channel-gate run with the
classifier's own weight decay; ``integral_1.5_channel`` in runs made before it), and changes one
thing per variant, or several joined by ``+`` (``scalar+warmup=1``: at most one of them changes
the head's layers):

- ``raw``: nothing. Its rows should match the run's own ``train eval`` reports, printed as ``run``.
- ``scalar``: one gate value per frame for all channels instead of one per channel
  (``--gate-shape frame``), so the classifier cannot read the scene through a few open channels
  while the rest stay shut.
- ``warmup=F``: L_gate's weight ramped up from 0 over the first fraction F of the epochs
  (``--gate-warmup F``), so the classifier learns to read the scene before L_gate shuts the gate.
- ``wd=X``: weight decay X on the whole head, the classifier included (also where the run gave
  the classifier its own).
- ``centered=EPS``: the gate reads ``(F_P - mean_c F_P) / (sd_c F_P + EPS)``, each frame's pose
  features centred and scaled over channels. EPS = 0 is a layer norm without affine. A larger EPS
  leaves a hidden person's near-zero F_P near zero, so its gate stays at sigmoid(bias).
- ``direction=C``: the gate reads ``F_P * sqrt(C_P) / (||F_P|| + C)``, plus ``||F_P|| / (||F_P|| + C)``
  as one more input: the direction and the presence of the pose features, each given its own input.
- ``dropout-classifier=P`` / ``dropout-appearance=P``: dropout before the classifier or on F'_A.
- ``wd-classifier=X``: weight decay X on the classifier only (the run's own on the rest), which
  limits how far the classifier can scale up what a narrow gate lets through.
- ``smoothing=X``: label smoothing X in the classification loss, which never lets it saturate.
- ``gate-loss-only``: the gate's weights get no gradient from the classification loss, only from
  L_gate (the TCBs and the classifier learn as usual): what L_gate and F_P alone make of the gate.
- ``gate-loss-bias-only``: L_gate reaches only the gate's bias; its weights learn from the
  classification loss alone: L_gate sets how wide the gate is overall, the classification loss
  where it is wider.
- ``epochs=N`` / ``lr=X`` / ``lambda=X``: the stage-2 schedule's length (its rate cuts move with
  it, at 1/2 and 3/4), its learning rate, or the gate loss weight; the gate itself is the default.

Per seed and variant it prints:
- top-1 in and out of context (the test clips cached by ``train eval``);
- the mean gate;
- the Table 5 reading (scene-only minus motion-only classes' mean gate, in context), over all
  videos and over visible persons only;
- the per-class gate of visible persons;
- the hidden persons' gate;
- with ``--pulls``, the training loss and top-1 on the cached views and, per class, how hard the
  classification loss pulls the trained gate open against how hard L_gate pulls it shut.

Run it on the tuning run (``out_of_context.py --tuning``). A variant chosen on the test sets'
reading would be chosen on them (docs/model.md, "Gate").
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from out_of_context import CLASSIFIER_DECAY_STAGE2, missing_run, stage2_tag
from out_of_context import MOTION_ONLY_CLASSES as MOTION_ONLY
from out_of_context import SCENE_ONLY_CLASSES as SCENE_ONLY
from torch import Tensor, nn

import model as models
from model.integral import HEAD_INIT_STD
from model.streams import init_non_resnet_
from train.distributed import Dist
from train.evaluate import predict_features
from train.features import FeatureSet, feature_batches
from train.fit import ramped_gate_weight

FLAG_VARIANTS = ("raw", "scalar", "gate-loss-only", "gate-loss-bias-only")
VALUE_VARIANTS = (
    "wd",
    "wd-classifier",
    "centered",
    "direction",
    "dropout-classifier",
    "dropout-appearance",
    "smoothing",
    "epochs",
    "lr",
    "lambda",
    "warmup",
)
# Variants that change the head's layers; one per combination.
LAYER_VARIANTS = ("scalar", "centered", "direction", "dropout-classifier", "dropout-appearance")
# The stage-2 run whose settings and reports are reproduced by default: the official code's gate,
# one per channel (--run picks another, e.g. integral_1.5_channel from runs made before the
# classifier had its own weight decay).
RUN_DIR = stage2_tag("integral", 1.5, "none", "channel", 0.0, CLASSIFIER_DECAY_STAGE2)


def load_features(folder: Path, views: int | None = None) -> FeatureSet:
    """The newest cache in ``folder`` (with ``views`` views, if given)."""
    for path in sorted(folder.glob("*.pt"), key=lambda p: p.stat().st_mtime, reverse=True):
        feats = FeatureSet.from_dict(torch.load(path, weights_only=False))
        if views is None or feats.views == views:
            return feats
    raise SystemExit(
        f"error: no feature cache{f' with {views} views' if views else ''} in {folder}"
    )


class GateInput(nn.Module):
    """The gate block reading a transform of F_P instead of F_P itself."""

    def __init__(self, cgb: nn.Module, kind: str, value: float) -> None:
        super().__init__()
        self.cgb, self.kind, self.value = cgb, kind, value
        if kind == "direction":  # one more input channel: the presence
            old = cgb.conv
            cgb.conv = nn.Conv1d(old.in_channels + 1, old.out_channels, 1)
            init_non_resnet_(cgb.conv, std=HEAD_INIT_STD)

    def forward(self, f_p: Tensor) -> Tensor:
        if self.kind == "centered":
            mean, sd = f_p.mean(-1, keepdim=True), f_p.std(-1, keepdim=True)
            return self.cgb((f_p - mean) / (sd + self.value))
        norm = f_p.norm(dim=-1, keepdim=True)
        presence = norm / (norm + self.value)
        direction = f_p * math.sqrt(f_p.shape[-1]) / (norm + self.value)
        # The presence on the direction's per-channel scale, so neither input dwarfs the other.
        return self.cgb(torch.cat([direction, presence * math.sqrt(f_p.shape[-1]) / 8], -1))


def parse_variant(text: str) -> tuple[str, float]:
    kind, _, value = text.partition("=")
    takes_value = kind in VALUE_VARIANTS
    try:
        number = float(value) if value else 0.0
    except ValueError:
        number = math.nan
    if (
        kind not in FLAG_VARIANTS + VALUE_VARIANTS
        or takes_value != bool(value)
        or math.isnan(number)
    ):
        raise SystemExit(
            f"error: variant {text!r}: use {', '.join(FLAG_VARIANTS)}, or NAME=X with NAME in "
            f"{', '.join(VALUE_VARIANTS)}"
        )
    return kind, number


def parse_combination(text: str) -> list[tuple[str, float]]:
    """``a+b=X+...``: the variants to apply together."""
    parts = [parse_variant(part) for part in text.split("+")]
    if sum(kind in LAYER_VARIANTS for kind, _ in parts) > 1:
        raise SystemExit(
            f"error: variant {text!r}: at most one of {', '.join(LAYER_VARIANTS)} at a time"
        )
    return parts


def build_head(settings: dict, kind: str, value: float) -> nn.Module:
    torch.manual_seed(settings["run"]["seed"])
    m = settings["model"]
    shape = "frame" if kind == "scalar" else "channel"
    net = models.build_integral_from_stage1(
        m["init_appearance"], m["init_pose"], "integral", gate_shape=shape
    )
    if kind in ("centered", "direction"):
        net.cgb = GateInput(net.cgb, kind, value)
    elif kind == "dropout-classifier":
        net.classifier = nn.Sequential(nn.Dropout(value), net.classifier)
    elif kind == "dropout-appearance":
        net.tcb_a = nn.Sequential(net.tcb_a, nn.Dropout(value))
    return net


def with_variant(settings: dict, kind: str, value: float) -> dict:
    """The run's stage-2 settings with a schedule variant (wd, epochs, lr, lambda) applied."""
    where = {
        "wd": ("optim", "weight_decay"),
        "epochs": ("optim", "epochs"),
        "lr": ("optim", "lr"),
        "lambda": ("model", "gate_weight"),
        "wd-classifier": ("optim", "classifier_weight_decay"),
        "smoothing": ("optim", "label_smoothing"),
        "gate-loss-only": ("optim", "gate_loss_only"),
        "gate-loss-bias-only": ("optim", "gate_loss_bias_only"),
        "warmup": ("optim", "gate_warmup"),
    }
    if kind not in where:
        return settings
    section, key = where[kind]
    changed = {**settings, section: dict(settings[section])}
    changed[section][key] = {
        "epochs": int(value),
        "gate-loss-only": True,
        "gate-loss-bias-only": True,
    }.get(kind, value)
    if kind == "wd":  # the whole head, the classifier too (a later wd-classifier=X overrides)
        changed["optim"]["classifier_weight_decay"] = None
    return changed


def train_head(net: nn.Module, feats: FeatureSet, settings: dict) -> None:
    """Stage 2 on cached views, as ``train fit --cache-features`` runs it (stage2 schedule)."""
    o, seed, full_lam = settings["optim"], settings["run"]["seed"], settings["model"]["gate_weight"]
    decay = {id(p): o["weight_decay"] for p in net.parameters()}
    if o.get("classifier_weight_decay") is not None:
        decay.update({id(p): o["classifier_weight_decay"] for p in net.classifier.parameters()})
    groups: dict[float, list] = {}
    for p in net.parameters():
        if p.requires_grad:
            groups.setdefault(decay[id(p)], []).append(p)
    opt = torch.optim.SGD(
        [{"params": ps, "weight_decay": wd} for wd, ps in groups.items()],
        lr=o["lr"],
        momentum=o["momentum"],
    )
    epochs = o["epochs"]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [epochs // 2, epochs * 3 // 4], 0.1)
    steps = math.ceil(len(feats) / o["batch_size"])
    net.train()
    for epoch in range(epochs):
        batches = feature_batches(feats, o["batch_size"], steps, seed, epoch, 0)
        for step, (f_a, f_p, y) in enumerate(batches):
            # As train fit ramps it (--gate-warmup): the full lambda without a warm-up.
            lam = ramped_gate_weight(
                full_lam, o.get("gate_warmup", 0.0), epoch + step / steps, epochs
            )
            out = net.head(f_a, f_p)
            smoothing = o.get("label_smoothing", 0.0)
            # The logits are frame-averaged log-probabilities, so cross_entropy's log-softmax of
            # them is the identity (up to rounding: nll_loss keeps `raw` equal to the run).
            ce = (
                F.cross_entropy(out["logits"], y, label_smoothing=smoothing)
                if smoothing
                else F.nll_loss(out["logits"], y)
            )
            opt.zero_grad()
            if o.get("gate_loss_only"):  # the gate learns from L_gate alone
                ce.backward(retain_graph=True)
                for p in net.cgb.parameters():
                    p.grad = None
                (lam * F.softplus(out["gate_logits"]).mean()).backward()
            elif o.get("gate_loss_bias_only"):  # L_gate moves the bias; the CE all the gate
                ce.backward(retain_graph=True)
                ce_grad = net.cgb.conv.weight.grad.clone()
                (lam * F.softplus(out["gate_logits"]).mean()).backward()
                net.cgb.conv.weight.grad = ce_grad
            else:
                (ce + lam * F.softplus(out["gate_logits"]).mean()).backward()
            opt.step()
        sched.step()
    net.eval()


def gate_pulls(net: nn.Module, feats: FeatureSet, gate_weight: float) -> str:
    """How hard each loss pushes the trained gate, on every cached training view.

    Per class, the mean over a video's gate logits z of the classification loss's opening pull
    (-dCE/dz) and the gate loss's closing pull (lambda d softplus(z)/dz, L_gate being a mean over
    the T x C' gates of a clip, as in training); also the training loss and top-1 on the views.
    """
    net.eval()  # the TCBs' LayerNorm has no batch statistics; eval only switches dropout off
    f_a = feats.f_a.flatten(0, 1).float()
    f_p = feats.f_p.flatten(0, 1).float()
    labels = feats.labels.repeat_interleave(feats.views)
    out = net.head(f_a, f_p)
    z = out["gate_logits"]
    ce = F.nll_loss(out["logits"], labels, reduction="sum")
    (d_ce,) = torch.autograd.grad(ce, z, retain_graph=True)
    (d_gate,) = torch.autograd.grad(gate_weight * F.softplus(z).sum() / z[0].numel(), z)
    opening, closing = (-d_ce).mean((1, 2)), d_gate.mean((1, 2))
    classes = int(labels.max()) + 1
    per_class = " ".join(
        f"{opening[labels == c].mean():+.1e}/{closing[labels == c].mean():.1e}"
        for c in range(classes)
    )
    top1 = 100 * (out["logits"].argmax(1) == labels).float().mean()
    return f"train CE {ce.item() / len(labels):.3f} top-1 {top1:.1f} | pulls open/close {per_class}"


def predict(net: nn.Module, feats: FeatureSet) -> dict[str, tuple[int, float, int]]:
    """Per video: (predicted class over its cached test clips, mean gate, label), as ``train
    eval`` computes them on cached features."""
    videos = predict_features(net, feats, torch.device("cpu"), Dist()).videos
    return {k: (int(v.probs.argmax()), v.gate, v.label) for k, v in videos.items()}


def reading(in_ctx: dict, out_ctx: dict, hidden: dict[str, bool], classes: int) -> str:
    def gate(which, visible_only: bool) -> float:
        values = [
            g for k, (_, g, y) in in_ctx.items() if y in which and not (visible_only and hidden[k])
        ]
        return statistics.mean(values) if values else math.nan

    def top1(res: dict) -> float:
        return 100 * statistics.mean(p == y for p, _, y in res.values())

    every = list(in_ctx.values()) + list(out_ctx.values())
    hidden_g = [g for k, (_, g, _) in {**in_ctx, **out_ctx}.items() if hidden[k]]
    per_class = " ".join(f"{gate((c,), True):.2f}" for c in range(classes))
    return (
        f"top-1 in {top1(in_ctx):5.1f} out {top1(out_ctx):5.1f} | "
        f"G {statistics.mean(g for _, g, _ in every):.3f} | "
        f"Table 5 all {gate(SCENE_ONLY, False) - gate(MOTION_ONLY, False):+.3f} "
        f"visible {gate(SCENE_ONLY, True) - gate(MOTION_ONLY, True):+.3f} | "
        f"visible per class {per_class} | hidden {statistics.mean(hidden_g):.2f}"
    )


def run_report(seed_dir: Path, run: str, part: str) -> tuple[dict, dict[str, bool]]:
    """The run's own ``train eval`` report: (predicted, gate, label) per video, and which
    videos hide their person (``--video-info``, from the synth metadata)."""
    report = json.loads((seed_dir / f"eval_{run}_{part}.json").read_text())
    names = report["confusion"]["classes"]
    result = {
        k: (names.index(p["pred"]), p["gate"], names.index(p["label"]))
        for k, p in report["predictions"].items()
    }
    return result, {k: bool(p["hidden"]) for k, p in report["predictions"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="an out_of_context.py run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--pulls", action="store_true", help="also print each loss's pull on the trained gate"
    )
    parser.add_argument(
        "--run", default=RUN_DIR, help=f"stage-2 run folder to reproduce (default {RUN_DIR})"
    )
    parser.add_argument("variants", nargs="+", help="raw, wd=X, centered=EPS, direction=C, ...")
    args = parser.parse_args()
    variants = [(text, parse_combination(text)) for text in args.variants]
    for seed in args.seeds:
        seed_dir = args.work / f"seed{seed}"
        config = seed_dir / args.run / "config.json"
        if not config.is_file():
            raise missing_run(seed_dir, args.run, "config.json")
        settings = json.loads(config.read_text())
        train_views = load_features(seed_dir / "features", settings["run"]["cache_features"])
        test = {p: load_features(seed_dir / f"eval_features_{p}") for p in ("in", "out")}
        classes = int(train_views.labels.max()) + 1
        (ours_in, hidden), (ours_out, hidden_out) = (
            run_report(seed_dir, args.run, p) for p in ("in", "out")
        )
        hidden.update(hidden_out)
        print(f"seed {seed} {'run':>22}: {reading(ours_in, ours_out, hidden, classes)}", flush=True)
        for text, parts in variants:
            layers = [(k, v) for k, v in parts if k in LAYER_VARIANTS] or [("raw", 0.0)]
            net = build_head(settings, *layers[0])
            varied = settings
            for kind, value in parts:
                varied = with_variant(varied, kind, value)
            train_head(net, train_views, varied)
            res = predict(net, test["in"]), predict(net, test["out"])
            print(f"seed {seed} {text:>22}: {reading(*res, hidden, classes)}", flush=True)
            if args.pulls:
                lam = varied["model"]["gate_weight"]
                print(f"seed {seed} {'':>22}  {gate_pulls(net, train_views, lam)}", flush=True)


if __name__ == "__main__":
    main()
