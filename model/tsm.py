"""Temporal shift module (TSM; Lin, Gan and Han, "TSM: Temporal Shift Module for Efficient Video
Understanding", ICCV 2019), as IntegralAction uses it in every residual block (paper section 3.1).

A 2D network sees a clip as a batch of frames ``[B * T, C, H, W]`` (frames of one clip adjacent,
clip-major). The shift moves a fraction of the channels one step along time so that the next 2D
convolution mixes information from neighbouring frames at no extra parameters or FLOPs:

- channels ``[0, C // fold_div)`` move forward in time: frame ``t`` receives frame ``t - 1``'s;
- channels ``[C // fold_div, 2 * C // fold_div)`` move backward: frame ``t`` receives ``t + 1``'s;
- the other channels stay; the frames shifted in from beyond the clip ends are zeros.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["temporal_shift", "TemporalShift"]


def temporal_shift(x: Tensor, num_segments: int, fold_div: int = 8) -> Tensor:
    """Shift ``1 / fold_div`` of the channels forward and ``1 / fold_div`` backward in time.

    Args:
        x: ``[B * T, C, H, W]``, the T frames of each clip adjacent.
        num_segments: T, the number of frames per clip (any T >= 1).
        fold_div: the shifted fraction's denominator per direction (8 in TSM and here).

    Returns:
        A new tensor ``[B * T, C, H, W]`` (same dtype, device and memory format).
    """
    if x.dim() != 4:
        raise ValueError(f"temporal_shift expects [B*T, C, H, W], got shape {tuple(x.shape)}")
    nt, c, h, w = x.shape
    if num_segments < 1 or nt % num_segments != 0:
        raise ValueError(
            f"temporal_shift: batch of {nt} frames is not a whole number of "
            f"{num_segments}-frame clips"
        )
    if fold_div < 2:
        raise ValueError(f"temporal_shift: fold_div must be at least 2, got {fold_div}")
    fold = c // fold_div
    if fold == 0:
        # Fewer than fold_div channels: nothing to shift.
        return x.clone()
    # Splitting the outermost dimension is a view for any memory format (channels-last too).
    x5 = x.view(nt // num_segments, num_segments, c, h, w)
    out = torch.zeros_like(x5)
    # Forward in time: frame t takes frame t - 1's first fold; frame 0 keeps zeros.
    out[:, 1:, :fold] = x5[:, :-1, :fold]
    # Backward in time: frame t takes frame t + 1's second fold; the last frame keeps zeros.
    out[:, :-1, fold : 2 * fold] = x5[:, 1:, fold : 2 * fold]
    out[:, :, 2 * fold :] = x5[:, :, 2 * fold :]
    return out.view(nt, c, h, w)


class TemporalShift(nn.Module):
    """Parameter-free module form of :func:`temporal_shift`.

    It holds no parameters or buffers, so a network that contains it keeps torchvision's
    state-dict names. T is passed at call time because one network may see clips of different
    lengths (the pose stream sees T_P frames, evaluation may use other clip lengths).
    """

    def __init__(self, fold_div: int = 8) -> None:
        super().__init__()
        self.fold_div = fold_div

    def forward(self, x: Tensor, num_segments: int) -> Tensor:
        """``[B * T, C, H, W]`` -> ``[B * T, C, H, W]``."""
        return temporal_shift(x, num_segments, self.fold_div)

    def extra_repr(self) -> str:
        return f"fold_div={self.fold_div}"
