"""NST: Huang & Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer",
arXiv 2017 (eq. 4: MMD with the degree-2 polynomial kernel, c = 0)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distiller_zoo.base import Distiller, Features, register
from models.util import pool_to_smaller

__all__ = ["NSTLoss"]


class NSTLoss(nn.Module):
    """Per-layer MMD^2 between student and teacher channel activation patterns.

    Each channel's spatial map is L2-normalised; k(x, y) = (x . y)^2;
    mmd = mean k(t, t) (detached) + mean k(s, s) - 2 mean k(s, t).
    Shapes: g_s, g_t lists of (B, C, H, W) (channels may differ) -> list of scalars.
    """

    def forward(
        self, g_s: list[torch.Tensor], g_t: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        return [self.nst_loss(f_s, f_t) for f_s, f_t in zip(g_s, g_t)]

    def nst_loss(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        f_s, f_t = pool_to_smaller(f_s, f_t)
        student = F.normalize(f_s.reshape(f_s.shape[0], f_s.shape[1], -1), dim=2)
        teacher = F.normalize(f_t.reshape(f_t.shape[0], f_t.shape[1], -1), dim=2)
        return (
            self.poly_kernel(teacher, teacher).mean().detach()
            + self.poly_kernel(student, student).mean()
            - 2 * self.poly_kernel(student, teacher).mean()
        )

    @staticmethod
    def poly_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(B, Ca, N), (B, Cb, N) -> (B, Ca, Cb) of (a_i . b_j)^2."""
        return torch.bmm(a, b.transpose(1, 2)).pow(2)


@register
class NeuronSelectivity(Distiller):
    """Polynomial-kernel MMD between channel activation distributions of each stage, summed."""

    display_name = "NST"
    paper = "Huang & Wang, Like What You Like: Knowledge Distill via Neuron Selectivity Transfer, arXiv 2017"
    default_beta = 50.0
    criterion = NSTLoss()  # no parameters: one instance serves every run

    def loss(self, features: Features) -> Tensor:
        return sum(self.criterion(features.student[1:-1], features.teacher[1:-1]))
