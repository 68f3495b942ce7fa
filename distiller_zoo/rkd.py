"""RKD: Park et al., "Relational Knowledge Distillation", CVPR 2019 (distance-wise eqs. 4-5,
angle-wise eqs. 6-7)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distiller_zoo.base import Distiller, Features, register

__all__ = ["RKDLoss"]


def pairwise_distances(embeddings: torch.Tensor, squared: bool = False, eps: float = 1e-12) -> torch.Tensor:
    """(B, D) -> (B, B) Euclidean distances, squared distances clamped at eps, zero diagonal."""
    square_norms = embeddings.pow(2).sum(dim=1)
    products = embeddings @ embeddings.t()
    distances = (square_norms.unsqueeze(1) + square_norms.unsqueeze(0) - 2 * products).clamp(min=eps)
    if not squared:
        distances = distances.sqrt()
    off_diagonal = ~torch.eye(len(embeddings), dtype=torch.bool, device=embeddings.device)
    return distances * off_diagonal


def _normalised_distances(embeddings: torch.Tensor) -> torch.Tensor:
    distances = pairwise_distances(embeddings, squared=False)
    return distances / distances[distances > 0].mean()


def _angles(embeddings: torch.Tensor) -> torch.Tensor:
    """Flattened (B*B*B,) cosines between difference vectors e_j - e_i and e_k - e_i."""
    differences = F.normalize(embeddings.unsqueeze(0) - embeddings.unsqueeze(1), p=2, dim=2)
    return torch.bmm(differences, differences.transpose(1, 2)).reshape(-1)


class RKDLoss(nn.Module):
    """w_d * smooth_l1(distance structure) + w_a * smooth_l1(angle structure).

    Distances are normalised by their mean over positive (off-diagonal) entries. Teacher terms
    carry no gradient. Shapes: f_s (B, ...), f_t (B, ...) -> scalar.
    """

    def __init__(self, w_d: float = 25, w_a: float = 50) -> None:
        super().__init__()
        self.w_d = w_d
        self.w_a = w_a

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        student = f_s.reshape(f_s.shape[0], -1)
        teacher = f_t.reshape(f_t.shape[0], -1)

        with torch.no_grad():
            teacher_distances = _normalised_distances(teacher)
            teacher_angles = _angles(teacher)
        distance_loss = F.smooth_l1_loss(_normalised_distances(student), teacher_distances)
        angle_loss = F.smooth_l1_loss(_angles(student), teacher_angles)
        return self.w_d * distance_loss + self.w_a * angle_loss


@register
class RelationalKD(Distiller):
    """Distance (x25) and angle (x50) relations of the pooled features."""

    display_name = "RKD"
    paper = "Park et al., Relational Knowledge Distillation, CVPR 2019"
    teacher_reads = "embedding"  # a teacher bank can stand in for the teacher
    default_beta = 1.0
    criterion = RKDLoss()  # no parameters: one instance serves every run

    def loss(self, features: Features) -> Tensor:
        return self.criterion(features.student[-1], features.teacher[-1])
