"""PKT: Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer",
ECCV 2018 (cosine-kernel conditional probabilities, eqs. 8-10)."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from distiller_zoo.base import Distiller, Features, register

__all__ = ["PKT"]


class PKT(nn.Module):
    """mean(p_t * log((p_t + eps) / (p_s + eps))) over the (B, B) conditional probabilities.

    p = row-normalise((cos + 1) / 2), cos the cosine similarity matrix of the L2-normalised
    features (norm + eps in the denominator). Shapes: f_s (B, D_s), f_t (B, D_t) -> scalar.
    """

    def __init__(self, eps: float = 1e-7) -> None:
        super().__init__()
        self.eps = eps

    def conditional_probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, B) rows of p(j | i)."""
        features = features.reshape(features.shape[0], -1)
        features = features / (features.norm(dim=1, keepdim=True) + self.eps)
        similarity = (features @ features.t() + 1.0) / 2.0
        return similarity / similarity.sum(dim=1, keepdim=True)

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        p_student = self.conditional_probabilities(f_s)
        p_teacher = self.conditional_probabilities(f_t)
        return (p_teacher * torch.log((p_teacher + self.eps) / (p_student + self.eps))).mean()


@register
class ProbabilisticTransfer(Distiller):
    """KL between cosine-similarity distributions of the pooled features."""

    display_name = "PKT"
    paper = "Passalis & Tefas, Learning Deep Representations with Probabilistic Knowledge Transfer, ECCV 2018"
    teacher_reads = "embedding"  # a teacher bank can stand in for the teacher
    default_beta = 30000.0
    criterion = PKT()  # no parameters: one instance serves every run

    def loss(self, features: Features) -> Tensor:
        return self.criterion(features.student[-1], features.teacher[-1])
