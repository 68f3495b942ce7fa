"""SP: Tung & Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019 (eq. 4)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distiller_zoo.base import Distiller, Features, register

__all__ = ["Similarity"]


class Similarity(nn.Module):
    """Per-layer sum((G_t - G_s)^2) / B^2 with G = row-L2-normalize(F F^T), F = f flattened.

    Shapes: g_s, g_t lists of (B, ...) features -> list of scalars.
    """

    def forward(
        self, g_s: list[torch.Tensor], g_t: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        return [self.similarity_loss(f_s, f_t) for f_s, f_t in zip(g_s, g_t)]

    @staticmethod
    def similarity_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        batch_size = f_s.shape[0]
        student = f_s.reshape(batch_size, -1)
        teacher = f_t.reshape(batch_size, -1)
        gram_student = F.normalize(student @ student.t(), dim=1)
        gram_teacher = F.normalize(teacher @ teacher.t(), dim=1)
        return (gram_teacher - gram_student).pow(2).sum() / (batch_size * batch_size)


@register
class SimilarityPreserving(Distiller):
    """Batch similarity matrices of the last feature map (feats[-2])."""

    display_name = "SP"
    paper = "Tung & Mori, Similarity-Preserving Knowledge Distillation, ICCV 2019"
    default_beta = 3000.0
    criterion = Similarity()  # no parameters: one instance serves every run

    def loss(self, features: Features) -> Tensor:
        return sum(self.criterion([features.student[-2]], [features.teacher[-2]]))
