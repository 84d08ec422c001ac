"""TSM-ResNet-18/34/50 with torchvision's parameter and buffer names.

The layout follows torchvision's ``models/resnet.py`` (He et al., CVPR 2016; ResNet v1.5 with the
stride in the 3x3 conv of the bottleneck) so that an ImageNet state dict saved by torchvision
loads by name with strict checking: ``conv1``, ``bn1``, ``layer1`` .. ``layer4`` (``.0.conv1``,
``.0.bn1``, ..., ``.0.downsample.0`` / ``.0.downsample.1``) and, when requested, ``fc``.

IntegralAction changes two things (paper section 3.1 and 3.2, official code):

- every residual block shifts its input in time (TSM, :mod:`model.tsm`) inside the residual
  branch, before ``conv1``; the identity (and downsample) path sees the unshifted input;
- the pose stream uses the network without the stem (strided 7x7 ``conv1``, ``bn1`` and the max
  pool): its input is already at a quarter of the RGB resolution, after the pose front block.

Nothing here downloads weights; :func:`load_imagenet_weights` reads a local file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from model.tsm import TemporalShift

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "RESNET_SPECS",
    "FEATURE_CHANNELS",
    "load_imagenet_weights",
]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding, no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """ResNet-18/34 block with a residual temporal shift.

    ``[B * T, inplanes, H, W]`` -> ``[B * T, planes, H / stride, W / stride]``.
    """

    expansion: int = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        shift_div: int | None = 8,
    ) -> None:
        super().__init__()
        self.shift = TemporalShift(shift_div) if shift_div else None
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor, num_segments: int) -> Tensor:
        identity = x
        # Residual shift (TSM section 3.3): shifting only the branch keeps the current frame's
        # information intact on the identity path.
        out = self.shift(x, num_segments) if self.shift is not None else x
        out = self.relu(self.bn1(self.conv1(out)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """ResNet-50 block (torchvision v1.5: stride in ``conv2``) with a residual temporal shift.

    ``[B * T, inplanes, H, W]`` -> ``[B * T, 4 * planes, H / stride, W / stride]``.
    """

    expansion: int = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        shift_div: int | None = 8,
    ) -> None:
        super().__init__()
        self.shift = TemporalShift(shift_div) if shift_div else None
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor, num_segments: int) -> Tensor:
        identity = x
        out = self.shift(x, num_segments) if self.shift is not None else x
        out = self.relu(self.bn1(self.conv1(out)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


Block = type[BasicBlock] | type[Bottleneck]

# depth -> (block, blocks per stage), as torchvision's resnet18/34/50.
RESNET_SPECS: dict[int, tuple[Block, tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}

# Channels of layer4's output, C in the paper's F_A / F_P (section 3.1).
FEATURE_CHANNELS: dict[int, int] = {18: 512, 34: 512, 50: 2048}


class ResNet(nn.Module):
    """TSM-ResNet backbone.

    Args:
        depth: 18, 34 or 50.
        num_segments: default T (frames per clip) for :meth:`forward`; a call may override it.
        stem: keep ``conv1`` / ``bn1`` / max pool (RGB input). ``False`` for the pose stream:
            the input then has 64 channels at the resolution ``layer1`` normally sees.
        shift_div: ``1 / shift_div`` of the channels shift each way in every block; ``None``
            gives a plain (image) ResNet.
        num_classes: add torchvision's ``avgpool`` + ``fc`` head with this many outputs (only
            needed to hold a complete torchvision state dict, e.g. in tests).

    Shapes: ``[B * T, 3, H, W]`` (``[B * T, 64, H / 4, W / 4]`` without stem) ->
    ``[B * T, C, H / 32, W / 32]``, C = :data:`FEATURE_CHANNELS` ``[depth]``; with ``fc``,
    :meth:`forward` returns ``[B * T, num_classes]`` as torchvision does.
    """

    def __init__(
        self,
        depth: int,
        num_segments: int = 8,
        stem: bool = True,
        shift_div: int | None = 8,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        if depth not in RESNET_SPECS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_SPECS)}, got {depth}")
        block, layers = RESNET_SPECS[depth]
        self.depth = depth
        self.num_segments = num_segments
        self.has_stem = stem
        self.inplanes = 64
        if stem:
            self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], 1, shift_div)
        self.layer2 = self._make_layer(block, 128, layers[1], 2, shift_div)
        self.layer3 = self._make_layer(block, 256, layers[2], 2, shift_div)
        self.layer4 = self._make_layer(block, 512, layers[3], 2, shift_div)
        self.out_channels = 512 * block.expansion
        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(self.out_channels, num_classes)
        else:
            self.fc = None

        # torchvision's initialisation (used when no ImageNet weights are loaded).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(
        self, block: Block, planes: int, blocks: int, stride: int, shift_div: int | None
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, shift_div)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, shift_div=shift_div))
        # nn.Sequential only for torchvision's names (layer1.0...); forward walks it itself
        # because the blocks take T as a second argument.
        return nn.Sequential(*layers)

    def forward_features(self, x: Tensor, num_segments: int | None = None) -> Tensor:
        """``[B * T, 3 | 64, H, W]`` -> layer4's map ``[B * T, C, h, w]``."""
        t = self.num_segments if num_segments is None else num_segments
        if self.has_stem:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for blk in layer:
                x = blk(x, t)
        return x

    def forward(self, x: Tensor, num_segments: int | None = None) -> Tensor:
        """Feature map ``[B * T, C, h, w]``; with ``fc``, class scores ``[B * T, num_classes]``."""
        x = self.forward_features(x, num_segments)
        if self.fc is None:
            return x
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _first(keys: list[str], n: int = 4) -> str:
    shown = ", ".join(keys[:n])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > n else shown


def load_imagenet_weights(module: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a torchvision-format ResNet state dict from a local file, strictly, by name.

    ``module`` is a :class:`ResNet` or anything holding one as ``.backbone`` (the streams). The
    file is a plain state dict (torchvision's ``resnet18-f37072fd.pth`` etc.), or a dict with it
    under ``state_dict`` / ``model``; a DDP ``module.`` prefix is removed. Keys the network lacks
    by design are dropped: ``fc.*`` when it has no head, ``conv1.*`` / ``bn1.*`` without a stem
    (the pose stream). Any other missing or unexpected key, or a shape mismatch, raises a
    one-line ``ValueError`` naming the first few; the network is then left unchanged.
    """
    net = module if isinstance(module, ResNet) else getattr(module, "backbone", None)
    if not isinstance(net, ResNet):
        raise ValueError(f"load_imagenet_weights: {type(module).__name__} holds no ResNet")
    try:
        loaded = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"ImageNet weights {os.fspath(path)}: no such file") from None
    except Exception as exc:  # unpickling errors have many types; report them in one line
        raise ValueError(
            f"ImageNet weights {os.fspath(path)}: not a torchvision ResNet state dict "
            f"({type(exc).__name__} loading it as plain tensors)"
        ) from None
    if isinstance(loaded, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(loaded.get(wrapper), Mapping):
                loaded = loaded[wrapper]
                break
    if not isinstance(loaded, Mapping):
        raise ValueError(f"ImageNet weights {os.fspath(path)}: not a state dict")
    state = {k.removeprefix("module."): v for k, v in loaded.items()}
    dropped = []
    if net.fc is None:
        dropped.append("fc.")
    if not net.has_stem:
        dropped += ["conv1.", "bn1."]
    state = {k: v for k, v in state.items() if not k.startswith(tuple(dropped))}

    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_first(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_first(unexpected)}")
        raise ValueError(
            f"ImageNet weights {os.fspath(path)} do not fit ResNet-{net.depth}: " + "; ".join(parts)
        )
    bad = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if tuple(v.shape) != tuple(own[k].shape)
    ]
    if bad:
        raise ValueError(
            f"ImageNet weights {os.fspath(path)} do not fit ResNet-{net.depth}: "
            f"shape mismatch {_first(bad, 2)}"
        )
    net.load_state_dict(state, strict=True)
