"""IntegralAction (Moon et al., CVPRW 2021): TSM-ResNet streams, pose-driven feature integration,
the variants the paper compares, and the checkpoint format the trainer writes.

Public API (docs/design.md, "Public Python API"; docs/model.md):

- :func:`build` ``(variant, num_classes, pose_channels, appearance_depth=50, pose_depth=18,
  clip_len=8, pose_clip_len=32, gate_norm="none", gate_shape="channel")`` -> ``nn.Module`` with
  ``forward(rgb, pose)`` (and ``features(rgb, pose)`` / ``head(f_a, f_p)``, its two halves);
- :data:`VARIANTS`; :func:`gate_loss`; :func:`integral_loss`;
- :func:`build_integral_from_stage1`, :func:`save_checkpoint`, :func:`load_checkpoint`,
  :func:`build_from_checkpoint`, :func:`check_contracts`;
- :func:`load_imagenet_weights` (a local torchvision-format file; nothing is downloaded).
"""

from model.checkpoint import (
    CONTRACT_KEYS,
    FORMAT_VERSION,
    CheckpointError,
    build_from_checkpoint,
    build_integral_from_stage1,
    capture_rng_state,
    check_contracts,
    load_checkpoint,
    merge_stage1_contracts,
    restore_rng_state,
    save_checkpoint,
)
from model.integral import (
    DEFAULT_GATE_NORM,
    DEFAULT_GATE_SHAPE,
    DEFAULT_GATE_WEIGHT,
    GATE_LOSS_VARIANTS,
    GATE_NORMS,
    GATE_SHAPES,
    GATED_VARIANTS,
    INTEGRATION_CHANNELS,
    STAGE1_VARIANTS,
    STAGE2_VARIANTS,
    VARIANTS,
    ActionModel,
    IntegralModel,
    ScoreAverageModel,
    SingleStreamModel,
    build,
    frame_average_log_probs,
    gate_loss,
    gate_loss_from_logits,
    integral_loss,
)
from model.resnet import FEATURE_CHANNELS, ResNet, load_imagenet_weights
from model.streams import AppearanceStream, PoseStream
from model.tsm import TemporalShift, temporal_shift

__all__ = [
    "ActionModel",
    "AppearanceStream",
    "CONTRACT_KEYS",
    "CheckpointError",
    "DEFAULT_GATE_NORM",
    "DEFAULT_GATE_SHAPE",
    "DEFAULT_GATE_WEIGHT",
    "GATE_LOSS_VARIANTS",
    "GATE_NORMS",
    "GATE_SHAPES",
    "FEATURE_CHANNELS",
    "FORMAT_VERSION",
    "GATED_VARIANTS",
    "INTEGRATION_CHANNELS",
    "IntegralModel",
    "PoseStream",
    "ResNet",
    "STAGE1_VARIANTS",
    "STAGE2_VARIANTS",
    "ScoreAverageModel",
    "SingleStreamModel",
    "TemporalShift",
    "VARIANTS",
    "build",
    "build_from_checkpoint",
    "build_integral_from_stage1",
    "capture_rng_state",
    "check_contracts",
    "frame_average_log_probs",
    "gate_loss",
    "gate_loss_from_logits",
    "integral_loss",
    "load_checkpoint",
    "load_imagenet_weights",
    "merge_stage1_contracts",
    "restore_rng_state",
    "save_checkpoint",
    "temporal_shift",
]
