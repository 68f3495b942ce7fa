"""AT: Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017 (eq. 2)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distiller_zoo.base import Distiller, Features, register
from models.util import pool_to_smaller

__all__ = ["Attention"]


class Attention(nn.Module):
    """Per-layer mean((a(s) - a(t))^2) with a(f) = L2-normalize(mean_c f^p, flattened).

    Shapes: g_s, g_t lists of (B, C, H, W) maps (channels may differ) -> list of scalars.
    The spatially larger map of each pair is adaptive-average-pooled to the smaller one.
    """

    def __init__(self, p: int = 2) -> None:
        super().__init__()
        self.p = p

    def forward(
        self, g_s: list[torch.Tensor], g_t: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        return [self.at_loss(f_s, f_t) for f_s, f_t in zip(g_s, g_t)]

    def at_loss(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        f_s, f_t = pool_to_smaller(f_s, f_t)
        return (self.at(f_s) - self.at(f_t)).pow(2).mean()

    def at(self, f: torch.Tensor) -> torch.Tensor:
        """Attention map (B, H*W): channel mean of f^p, L2-normalised per sample."""
        return F.normalize(f.pow(self.p).mean(1).reshape(f.shape[0], -1), dim=1)


@register
class AttentionTransfer(Distiller):
    """Attention-map matching on every stage output (feats[1:-1]), summed over layers."""

    display_name = "AT"
    paper = "Zagoruyko & Komodakis, Paying More Attention to Attention, ICLR 2017"
    default_beta = 1000.0
    criterion = Attention()  # no parameters: one instance serves every run

    def loss(self, features: Features) -> Tensor:
        return sum(self.criterion(features.student[1:-1], features.teacher[1:-1]))
