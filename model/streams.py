"""The two IntegralAction streams (paper sections 3.1 and 3.2): clip in, per-frame features out.

- :class:`AppearanceStream`: TSM-ResNet on RGB frames, global average pool:
  ``rgb [B, T, 3, H, W]`` -> ``F_A [B, T, C]``.
- :class:`PoseStream`: front block conv3x3 (K + 2B -> 64) + BN + ReLU, then the same TSM-ResNet
  family without its stem, global average pool, then an average over each group of T_P / T
  consecutive frames: ``pose [B, T_P, K + 2B, H / 4, W / 4]`` -> ``F_P [B, T, C]``.

C is 512 for ResNet-18/34 and 2048 for ResNet-50. For a 224x224 RGB input and a 56x56 raster
both streams' last maps are 7x7: the pose input enters where the RGB stem's output does.
"""

from __future__ import annotations

from torch import Tensor, nn

from model.resnet import ResNet

__all__ = ["AppearanceStream", "PoseStream", "init_non_resnet_"]


def init_non_resnet_(module: nn.Module, std: float = 0.001) -> None:
    """Initialise every layer outside the ResNets as the paper does (section 3.5): weights from
    N(0, std = 0.001), biases zero; normalisation layers start as the identity (scale 1, shift 0).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.LayerNorm):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def _check_clip(x: Tensor, name: str, channels: int | None) -> None:
    if x.dim() != 5:
        raise ValueError(f"{name} must be [B, T, C, H, W], got shape {tuple(x.shape)}")
    if channels is not None and x.shape[2] != channels:
        raise ValueError(
            f"{name} has {x.shape[2]} channels per frame, the model expects {channels}"
        )


class AppearanceStream(nn.Module):
    """TSM-ResNet on RGB: ``rgb [B, T, 3, H, W]`` -> ``F_A [B, T, C]`` (paper section 3.1).

    T is read from the input; ``clip_len`` is only the default the backbone records.
    """

    def __init__(self, depth: int = 50, clip_len: int = 8) -> None:
        super().__init__()
        self.backbone = ResNet(depth, num_segments=clip_len, stem=True)
        self.out_channels = self.backbone.out_channels
        self.clip_len = clip_len

    def feature_maps(self, rgb: Tensor) -> Tensor:
        """``[B, T, 3, H, W]`` -> layer4 maps ``[B * T, C, H / 32, W / 32]``."""
        _check_clip(rgb, "rgb", 3)
        return self.backbone(rgb.flatten(0, 1), num_segments=rgb.shape[1])

    def forward(self, rgb: Tensor) -> Tensor:
        b, t = rgb.shape[:2]
        return self.feature_maps(rgb).mean(dim=(2, 3)).view(b, t, self.out_channels)


class PoseStream(nn.Module):
    """Front block + stemless TSM-ResNet on pose rasters (paper section 3.2).

    ``pose [B, T_P, K + 2B, h, w]`` -> ``F_P [B, T_P / r, C]`` with r = ``pose_clip_len //
    clip_len`` (4 for the paper's 32 -> 8; 1 in the ablations where both streams see 8 frames).
    The temporal shift runs over all T_P pose frames; pooling happens after the global pool so
    that F_P lines up frame by frame with F_A.
    """

    def __init__(
        self, in_channels: int, depth: int = 18, clip_len: int = 8, pose_clip_len: int = 32
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"pose stream needs at least one input channel, got {in_channels}")
        if clip_len < 1 or pose_clip_len % clip_len != 0:
            raise ValueError(
                f"pose_clip_len ({pose_clip_len}) must be a multiple of clip_len ({clip_len})"
            )
        self.in_channels = in_channels
        self.clip_len = clip_len
        self.pose_clip_len = pose_clip_len
        self.pool = pose_clip_len // clip_len
        # conv3x3 (K + 2B -> 64) + BN + ReLU; no bias because BN follows.
        self.front = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
        init_non_resnet_(self.front)
        self.backbone = ResNet(depth, num_segments=pose_clip_len, stem=False)
        self.out_channels = self.backbone.out_channels

    def feature_maps(self, pose: Tensor) -> Tensor:
        """``[B, T_P, K + 2B, h, w]`` -> layer4 maps ``[B * T_P, C, h / 8, w / 8]``."""
        _check_clip(pose, "pose", self.in_channels)
        b, tp = pose.shape[:2]
        if tp % self.pool != 0:
            raise ValueError(
                f"pose clip of {tp} frames does not pool by {self.pool} "
                f"(pose_clip_len {self.pose_clip_len} / clip_len {self.clip_len})"
            )
        x = self.front(pose.flatten(0, 1))
        return self.backbone(x, num_segments=tp)

    def forward(self, pose: Tensor) -> Tensor:
        b, tp = pose.shape[:2]
        f = self.feature_maps(pose).mean(dim=(2, 3))  # [B * T_P, C]
        return f.view(b, tp // self.pool, self.pool, self.out_channels).mean(dim=2)
