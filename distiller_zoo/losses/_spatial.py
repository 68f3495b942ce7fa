"""Shared helper: bring two feature maps to the same spatial size."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pool_to_smaller(
    first: torch.Tensor, second: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive-average-pool the spatially larger of two (B, C, H, W) maps to the other's size.

    This is what RepDistiller does before comparing maps of different resolution (AT, FT, NST,
    VID, FSP). Maps that already match are returned unchanged.
    """
    first_size, second_size = tuple(first.shape[2:]), tuple(second.shape[2:])
    if first_size == second_size:
        return first, second
    if first_size[0] * first_size[1] > second_size[0] * second_size[1]:
        return F.adaptive_avg_pool2d(first, second_size), second
    return first, F.adaptive_avg_pool2d(second, first_size)
