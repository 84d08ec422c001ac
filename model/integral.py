"""IntegralAction models: the stage-1 single streams, pose-driven feature integration (paper
section 3.3) and the integration variants the paper compares, behind one :func:`build`.

Every model's ``forward(rgb, pose)`` returns a dict:

- ``logits`` ``[B, num_classes]``: the log of the frame-averaged softmax probabilities (the paper
  averages class probabilities over frames; section 3.4). ``logits.exp()`` sums to 1, and
  ``F.nll_loss(logits, target)`` is the cross-entropy of those averaged probabilities.
- for gated variants, ``gate`` ``[B, T, 512]`` = G in [0, 1] (the weight of appearance) and
  ``gate_logits`` ``[B, T, 512]``, G before its sigmoid, from which L_gate is computed stably.

Integration (section 3.3), per frame t, with C' = 512:

    F'_A = TCB_A(F_A),  F'_P = TCB_P(F_P),   TCB = conv1d(k=1) + LayerNorm + ReLU
    G    = sigmoid(CGB(F_P)),                CGB = conv1d(k=1) with bias (official code)
    F    = G * F'_A + (1 - G) * F'_P
    L    = CE + lambda * mean(-log(1 - G)),  lambda = 1.5

L_gate pushes G towards 0, i.e. towards the pose features, unless appearance pays for itself in
the classification loss. The official code writes the same model with the gate's role mirrored
(its gate weighs pose and its BCE pulls it to 1); the two are equal under G -> 1 - G.

The CGB follows the official code (mks0601/IntegralAction_RELEASE, ``common/nets/module.py``): a
linear layer with bias and no normalisation. The paper's text adds a BatchNorm
(``gate_norm="batchnorm"``); in training mode it pins each channel's batch mean of z to the
BatchNorm's shift, so the convolution cannot move the mean gate and L_gate barely does
(docs/model.md, "Gate").

Every model can also run from pooled stream features (:meth:`IntegralModel.head`): the frozen
streams of stage 2 are then computed once and cached (``train/features.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.resnet import RESNET_SPECS
from model.streams import AppearanceStream, PoseStream, init_non_resnet_

__all__ = [
    "VARIANTS",
    "STAGE1_VARIANTS",
    "STAGE2_VARIANTS",
    "GATED_VARIANTS",
    "GATE_LOSS_VARIANTS",
    "INTEGRATION_CHANNELS",
    "DEFAULT_GATE_WEIGHT",
    "GATE_NORMS",
    "DEFAULT_GATE_NORM",
    "GATE_SHAPES",
    "DEFAULT_GATE_SHAPE",
    "HEAD_INIT_STD",
    "ActionModel",
    "SingleStreamModel",
    "IntegralModel",
    "ScoreAverageModel",
    "TemporalConvBlock",
    "ChannelGateBlock",
    "build",
    "gate_loss",
    "gate_loss_from_logits",
    "integral_loss",
    "frame_average_log_probs",
]

VARIANTS: tuple[str, ...] = (
    "appearance",
    "pose",
    "integral",
    "appearance_gate",
    "both_gate",
    "no_gate",
    "no_gate_loss",
    "feature_fuse",
    "score_average",
)
STAGE1_VARIANTS: tuple[str, ...] = ("appearance", "pose")
STAGE2_VARIANTS: tuple[str, ...] = tuple(v for v in VARIANTS if v not in STAGE1_VARIANTS)
# Variants whose output carries a gate; all but no_gate_loss train it with L_gate.
GATED_VARIANTS: tuple[str, ...] = ("integral", "appearance_gate", "both_gate", "no_gate_loss")
GATE_LOSS_VARIANTS: tuple[str, ...] = tuple(v for v in GATED_VARIANTS if v != "no_gate_loss")
# What drives the gate (section 3.3 for pose; the ablation for the others).
_GATE_SOURCE = {
    "integral": "pose",
    "no_gate_loss": "pose",
    "appearance_gate": "appearance",
    "both_gate": "both",
}
INTEGRATION_CHANNELS = 512  # C' (section 3.3)
DEFAULT_GATE_WEIGHT = 1.5  # lambda (section 3.4)
# How the CGB's pre-sigmoid value is normalised: "none" as the official code's gate (a linear
# layer with bias), "batchnorm" as the paper's text (section 3.3).
GATE_NORMS: tuple[str, ...] = ("none", "batchnorm")
DEFAULT_GATE_NORM = "none"
# How many gate values per frame: "channel", one per channel of C' (the paper's G in
# [0, 1]^{T x C'} and the official code's pose_gate_fc), or "frame", one per frame that weighs
# every channel alike (docs/model.md, "Measured: a gate per frame"). With one per channel the
# classifier can read the scene through a few open channels, so the classification loss never
# needs the gate as a whole to open where pose cannot decide.
GATE_SHAPES: tuple[str, ...] = ("channel", "frame")
DEFAULT_GATE_SHAPE = "channel"
# The official code initialises its linear layers (the gate and the classifiers) from
# N(0, 0.01) and its convolutions from N(0, 0.001) (main/model.py, init_weights). At 0.001 for
# the classifier too, the classification gradient reaching the gate starts 10x weaker than
# L_gate's, so L_gate closes the gate before the classifier has learnt anything.
HEAD_INIT_STD = 0.01


# ----------------------------------------------------------------------------------------------
# Losses and score averaging


def frame_average_log_probs(frame_logits: Tensor) -> Tensor:
    """``[B, T, N]`` per-frame class scores -> ``[B, N]`` log of the mean of the T softmaxes.

    Computed as ``logsumexp_t(log_softmax) - log T`` so that it stays finite when a probability
    underflows; float32 even under autocast.
    """
    log_p = F.log_softmax(frame_logits.float(), dim=-1)
    return torch.logsumexp(log_p, dim=1) - math.log(frame_logits.shape[1])


def gate_loss(gate: Tensor) -> Tensor:
    """L_gate = mean(-log(1 - G)) over all elements of ``gate`` (section 3.4).

    ``1 - G`` is clamped at float32's machine epsilon, so G = 1 gives about 15.9, not infinity.
    Training should prefer :func:`gate_loss_from_logits`, which is exact at any gate value.
    """
    one_minus = (1.0 - gate.float()).clamp_min(torch.finfo(torch.float32).eps)
    return -torch.log(one_minus).mean()


def gate_loss_from_logits(gate_logits: Tensor) -> Tensor:
    """L_gate from the pre-sigmoid gate z: ``-log(1 - sigmoid(z)) = softplus(z)``, stable."""
    return F.softplus(gate_logits.float()).mean()


def integral_loss(
    output: dict[str, Tensor], target: Tensor, gate_weight: float = DEFAULT_GATE_WEIGHT
) -> tuple[Tensor, Tensor, Tensor]:
    """``(total, ce, gate_term)`` with ``total = ce + gate_weight * gate_term`` (section 3.4).

    ``ce`` is the NLL of ``output["logits"]`` (already log-probabilities); ``gate_term`` is
    L_gate from ``gate_logits`` (softplus form) or, lacking those, from ``gate``; zero for models
    without a gate. Use :meth:`ActionModel.integral_loss` to honour ``no_gate_loss``.
    """
    ce = F.nll_loss(output["logits"].float(), target)
    if "gate_logits" in output:
        gate_term = gate_loss_from_logits(output["gate_logits"])
    elif "gate" in output:
        gate_term = gate_loss(output["gate"])
    else:
        gate_term = ce.new_zeros(())
    return ce + gate_weight * gate_term, ce, gate_term


# ----------------------------------------------------------------------------------------------
# Integration blocks


class TemporalConvBlock(nn.Module):
    """TCB (section 3.3): conv1d (k = 1) + LayerNorm + ReLU, ``[B, T, C] -> [B, T, C']``."""

    def __init__(self, in_channels: int, out_channels: int = INTEGRATION_CHANNELS) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size=1)
        self.norm = nn.LayerNorm(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x.transpose(1, 2)).transpose(1, 2)  # conv1d wants [B, C, T]
        return self.relu(self.norm(x))


class ChannelGateBlock(nn.Module):
    """CGB (section 3.3) before its sigmoid: ``[B, T, C] -> [B, T, C']`` pre-sigmoid gate z.

    ``norm="none"`` (default, the official code): conv1d (k = 1) with bias. ``norm="batchnorm"``
    (the paper's text): conv1d (k = 1) without bias, then BatchNorm; in training mode the batch
    mean of z in each channel then equals the BatchNorm's shift whatever the input and the
    convolution's weights, which pins the mean gate (docs/model.md, "Gate").

    G = sigmoid(z); returning z lets the loss use softplus(z) instead of -log(1 - G).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = INTEGRATION_CHANNELS,
        norm: str = DEFAULT_GATE_NORM,
    ) -> None:
        super().__init__()
        if norm not in GATE_NORMS:
            raise ValueError(f"gate_norm must be one of {', '.join(GATE_NORMS)}, got {norm!r}")
        self.norm = norm
        # With BatchNorm, no bias: the BatchNorm's shift would cancel it.
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size=1, bias=norm == "none")
        self.bn = nn.BatchNorm1d(out_channels) if norm == "batchnorm" else None

    def forward(self, x: Tensor) -> Tensor:
        z = self.conv(x.transpose(1, 2))
        if self.bn is not None:
            z = self.bn(z)
        return z.transpose(1, 2)


# ----------------------------------------------------------------------------------------------
# Models


class ActionModel(nn.Module):
    """What every built model shares: its name, build arguments, loss and stream freezing.

    Attributes:
        variant: one of :data:`VARIANTS`.
        config: the :func:`build` keyword arguments that rebuild this model.
        has_gate: the output carries ``gate`` and ``gate_logits``.
        uses_gate_loss: train with L_gate (False for ``no_gate_loss`` and gateless models).
        streams_frozen: set by :meth:`freeze_streams` (stage 2).
    """

    variant: str
    has_gate: bool = False
    uses_gate_loss: bool = False

    def __init__(self, variant: str, config: dict) -> None:
        super().__init__()
        self.variant = variant
        self.config = dict(config)
        self.streams_frozen = False

    def frozen_modules(self) -> list[nn.Module]:
        """The modules :meth:`freeze_streams` freezes (the feature streams)."""
        streams = (getattr(self, "appearance", None), getattr(self, "pose", None))
        return [m for m in streams if m is not None]

    def freeze_streams(self) -> None:
        """Stage 2 (section 3.5): the streams get no gradient and keep BatchNorm in eval mode."""
        for m in self.frozen_modules():
            m.requires_grad_(False)
        self.streams_frozen = True
        self.train(self.training)

    def train(self, mode: bool = True) -> ActionModel:
        super().train(mode)
        if self.streams_frozen:
            # Frozen BatchNorm must keep its stage-1 running statistics, not update them.
            for m in self.frozen_modules():
                m.eval()
        return self

    def integral_loss(
        self, output: dict[str, Tensor], target: Tensor, gate_weight: float = DEFAULT_GATE_WEIGHT
    ) -> tuple[Tensor, Tensor, Tensor]:
        """:func:`integral_loss` with lambda forced to 0 where the variant trains without L_gate;
        ``gate_term`` is still reported for logging."""
        return integral_loss(output, target, gate_weight if self.uses_gate_loss else 0.0)


def _need(x: Tensor | None, name: str, variant: str) -> Tensor:
    if x is None:
        raise ValueError(f"variant {variant!r} needs the {name} input, got None")
    return x


class SingleStreamModel(ActionModel):
    """Stage 1: one stream and a per-frame linear classifier (appearance-only or pose-only).

    ``forward(rgb, pose)`` uses only its own input; the other may be ``None`` (and is ignored).
    """

    def __init__(self, variant: str, stream: nn.Module, num_classes: int, config: dict) -> None:
        super().__init__(variant, config)
        if variant == "appearance":
            self.appearance: AppearanceStream | None = stream
            self.pose: PoseStream | None = None
        elif variant == "pose":
            self.appearance = None
            self.pose = stream
        else:
            raise ValueError(f"single-stream variant must be appearance or pose, got {variant!r}")
        self.classifier = nn.Linear(stream.out_channels, num_classes)
        init_non_resnet_(self.classifier, std=HEAD_INIT_STD)

    def features(self, rgb: Tensor | None, pose: Tensor | None) -> tuple[Tensor | None, ...]:
        """The stream's pooled per-frame features ``(F_A, None)`` or ``(None, F_P)``."""
        if self.appearance is not None:
            return self.appearance(_need(rgb, "rgb", self.variant)), None
        return None, self.pose(_need(pose, "pose", self.variant))

    def head(self, f_a: Tensor | None, f_p: Tensor | None) -> dict[str, Tensor]:
        """Everything after the stream: ``[B, T, C]`` features -> the output dict."""
        feats = f_a if self.appearance is not None else f_p
        return {"logits": frame_average_log_probs(self.classifier(feats))}

    def forward(self, rgb: Tensor | None = None, pose: Tensor | None = None) -> dict[str, Tensor]:
        return self.head(*self.features(rgb, pose))


class IntegralModel(ActionModel):
    """Stage 2: both streams, TCBs, an integration rule and a per-frame classifier.

    Variants: ``integral`` (pose-driven gate, section 3.3), ``appearance_gate`` /
    ``both_gate`` (gate driven by F_A / by [F_A, F_P]), ``no_gate_loss`` (pose-driven gate,
    trained without L_gate), ``no_gate`` (F = F'_A + F'_P), ``feature_fuse``
    (F = ReLU(FC([F'_A, F'_P]))).
    """

    def __init__(
        self,
        variant: str,
        appearance: AppearanceStream,
        pose: PoseStream,
        num_classes: int,
        config: dict,
        gate_norm: str = DEFAULT_GATE_NORM,
        gate_shape: str = DEFAULT_GATE_SHAPE,
    ) -> None:
        super().__init__(variant, config)
        if variant in STAGE1_VARIANTS or variant == "score_average" or variant not in VARIANTS:
            raise ValueError(f"IntegralModel does not build variant {variant!r}")
        self.appearance = appearance
        self.pose = pose
        c = INTEGRATION_CHANNELS
        self.tcb_a = TemporalConvBlock(appearance.out_channels, c)
        self.tcb_p = TemporalConvBlock(pose.out_channels, c)
        self.gate_source = _GATE_SOURCE.get(variant)
        self.has_gate = self.gate_source is not None
        self.uses_gate_loss = variant in GATE_LOSS_VARIANTS
        if self.gate_source is not None:
            gate_in = {
                "pose": pose.out_channels,
                "appearance": appearance.out_channels,
                "both": appearance.out_channels + pose.out_channels,
            }[self.gate_source]
            gates = c if gate_shape == "channel" else 1  # [B, T, 1] broadcasts over C'
            self.cgb = ChannelGateBlock(gate_in, gates, norm=gate_norm)
        else:
            self.cgb = None
        if variant == "feature_fuse":
            self.fuse = nn.Sequential(nn.Linear(2 * c, c), nn.ReLU(inplace=True))
        else:
            self.fuse = None
        self.classifier = nn.Linear(c, num_classes)
        for m in (self.tcb_a, self.tcb_p, self.fuse):
            if m is not None:
                init_non_resnet_(m)
        # Gate and classifier as the official code's linear layers (HEAD_INIT_STD).
        for m in (self.cgb, self.classifier):
            if m is not None:
                init_non_resnet_(m, std=HEAD_INIT_STD)

    def features(self, rgb: Tensor | None, pose: Tensor | None) -> tuple[Tensor, Tensor]:
        """The streams' pooled per-frame features ``F_A [B, T, C_A]``, ``F_P [B, T, C_P]``."""
        f_a = self.appearance(_need(rgb, "rgb", self.variant))
        f_p = self.pose(_need(pose, "pose", self.variant))
        return f_a, f_p

    def forward(self, rgb: Tensor | None, pose: Tensor | None) -> dict[str, Tensor]:
        return self.head(*self.features(rgb, pose))

    def head(self, f_a: Tensor, f_p: Tensor) -> dict[str, Tensor]:
        """Integration and classifier on pooled stream features (all of the model that stage 2
        trains): ``F_A [B, T, C_A]``, ``F_P [B, T, C_P]`` -> the output dict."""
        if f_a.shape[:2] != f_p.shape[:2]:
            raise ValueError(
                f"streams disagree on [B, T]: appearance {tuple(f_a.shape[:2])}, pose "
                f"{tuple(f_p.shape[:2])} (pose frames / {self.pose.pool} must equal RGB frames)"
            )
        a = self.tcb_a(f_a)  # F'_A [B, T, C']
        p = self.tcb_p(f_p)  # F'_P [B, T, C']
        out: dict[str, Tensor] = {}
        if self.cgb is not None:
            src = {"pose": f_p, "appearance": f_a}.get(self.gate_source)
            if src is None:
                src = torch.cat([f_a, f_p], dim=-1)
            z = self.cgb(src)
            g = torch.sigmoid(z)
            feats = g * a + (1.0 - g) * p  # G weighs appearance (section 3.3)
            out["gate"] = g
            out["gate_logits"] = z
        elif self.fuse is not None:
            feats = self.fuse(torch.cat([a, p], dim=-1))
        else:
            feats = a + p
        out["logits"] = frame_average_log_probs(self.classifier(feats))
        return out


class ScoreAverageModel(ActionModel):
    """Late fusion: the mean of an appearance-only and a pose-only model's probabilities.

    ``logits = log((p_A + p_P) / 2)`` with p_A, p_P the frame-averaged softmaxes. Built from
    stage 1 it has nothing left to train: :meth:`freeze_streams` freezes both classifiers too.
    """

    def __init__(
        self, appearance: AppearanceStream, pose: PoseStream, num_classes: int, config: dict
    ) -> None:
        super().__init__("score_average", config)
        self.appearance = appearance
        self.pose = pose
        self.appearance_classifier = nn.Linear(appearance.out_channels, num_classes)
        self.pose_classifier = nn.Linear(pose.out_channels, num_classes)
        init_non_resnet_(self.appearance_classifier, std=HEAD_INIT_STD)
        init_non_resnet_(self.pose_classifier, std=HEAD_INIT_STD)

    def frozen_modules(self) -> list[nn.Module]:
        return [self.appearance, self.pose, self.appearance_classifier, self.pose_classifier]

    def features(self, rgb: Tensor | None, pose: Tensor | None) -> tuple[Tensor, Tensor]:
        f_a = self.appearance(_need(rgb, "rgb", self.variant))
        f_p = self.pose(_need(pose, "pose", self.variant))
        return f_a, f_p

    def head(self, f_a: Tensor, f_p: Tensor) -> dict[str, Tensor]:
        la = frame_average_log_probs(self.appearance_classifier(f_a))
        lp = frame_average_log_probs(self.pose_classifier(f_p))
        return {"logits": torch.logsumexp(torch.stack([la, lp]), dim=0) - math.log(2.0)}

    def forward(self, rgb: Tensor | None, pose: Tensor | None) -> dict[str, Tensor]:
        return self.head(*self.features(rgb, pose))


# ----------------------------------------------------------------------------------------------
# Public constructor


def build(
    variant: str,
    num_classes: int,
    pose_channels: int | None,
    appearance_depth: int = 50,
    pose_depth: int = 18,
    clip_len: int = 8,
    pose_clip_len: int = 32,
    gate_norm: str = DEFAULT_GATE_NORM,
    gate_shape: str = DEFAULT_GATE_SHAPE,
) -> ActionModel:
    """Build a model by variant name.

    Args:
        variant: one of :data:`VARIANTS`.
        num_classes: number of action classes.
        pose_channels: K + 2B raster channels (heatmaps then PAF pairs); may be ``None`` for
            ``appearance``.
        appearance_depth, pose_depth: ResNet depth of each stream (18, 34 or 50); the paper uses
            50 and 18 (section 4.1).
        clip_len: T, RGB frames per clip (8, paper Table 1).
        pose_clip_len: T_P, pose frames per clip (32, paper Table 1); a multiple of ``clip_len``.
        gate_norm: the CGB's normalisation, ``"none"`` (the official code's gate, default) or
            ``"batchnorm"`` (the paper's text); used by the gated variants.
        gate_shape: ``"channel"`` (one gate per channel, ``gate [B, T, 512]``, the paper's and
            the official code's, default) or ``"frame"`` (one per frame, ``gate [B, T, 1]``).

    Returns:
        An :class:`ActionModel` whose ``forward(rgb, pose)`` takes ``rgb [B, T, 3, H, W]`` and
        ``pose [B, T_P, pose_channels, H / 4, W / 4]`` (``None`` for the unused input of a
        single-stream variant) and returns ``{"logits": [B, num_classes]}`` plus ``gate`` and
        ``gate_logits`` ``[B, T, 512]`` (``[B, T, 1]`` with ``gate_shape="frame"``) for gated
        variants.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    for name, depth in (("appearance_depth", appearance_depth), ("pose_depth", pose_depth)):
        if depth not in RESNET_SPECS:
            raise ValueError(f"{name} must be one of {sorted(RESNET_SPECS)}, got {depth}")
    if clip_len < 1 or pose_clip_len < 1:
        raise ValueError(
            f"clip_len and pose_clip_len must be >= 1, got {clip_len}, {pose_clip_len}"
        )
    if variant != "appearance" and pose_clip_len % clip_len != 0:  # the pose stream pools T_P -> T
        raise ValueError(
            f"pose_clip_len ({pose_clip_len}) must be a positive multiple of clip_len ({clip_len})"
        )
    if gate_norm not in GATE_NORMS:
        raise ValueError(f"gate_norm must be one of {', '.join(GATE_NORMS)}, got {gate_norm!r}")
    if gate_shape not in GATE_SHAPES:
        raise ValueError(f"gate_shape must be one of {', '.join(GATE_SHAPES)}, got {gate_shape!r}")
    if variant != "appearance" and (pose_channels is None or pose_channels < 1):
        raise ValueError(f"variant {variant!r} needs pose_channels (K + 2B), got {pose_channels}")
    config = {
        "variant": variant,
        "num_classes": num_classes,
        "pose_channels": pose_channels,
        "appearance_depth": appearance_depth,
        "pose_depth": pose_depth,
        "clip_len": clip_len,
        "pose_clip_len": pose_clip_len,
    }
    if variant in GATED_VARIANTS:
        config["gate_norm"] = gate_norm
        config["gate_shape"] = gate_shape

    def appearance() -> AppearanceStream:
        return AppearanceStream(appearance_depth, clip_len)

    def pose() -> PoseStream:
        return PoseStream(pose_channels, pose_depth, clip_len, pose_clip_len)

    if variant == "appearance":
        return SingleStreamModel(variant, appearance(), num_classes, config)
    if variant == "pose":
        return SingleStreamModel(variant, pose(), num_classes, config)
    if variant == "score_average":
        return ScoreAverageModel(appearance(), pose(), num_classes, config)
    return IntegralModel(
        variant, appearance(), pose(), num_classes, config, gate_norm=gate_norm,
        gate_shape=gate_shape,
    )  # fmt: skip
