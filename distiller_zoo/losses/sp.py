"""Similarity-preserving distillation (Tung & Mori, 2019, "Similarity-Preserving Knowledge Distillation", eq. 4)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


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
