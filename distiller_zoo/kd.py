"""KD: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", NIPS workshop 2015.

The KL term is part of every run (weighted by -a); ``--distill kd`` adds nothing else."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from distiller_zoo.base import LOGIT_STAND, Distiller, Flag, register

__all__ = ["DistillKL", "normalize", "kd_loss"]


class DistillKL(nn.Module):
    """T^2 * KL(softmax(y_t / T) || softmax(y_s / T)), summed over classes, mean over the batch.

    Shapes: y_s, y_t (B, num_classes) logits -> scalar.
    """

    def __init__(self, T: float) -> None:
        super().__init__()
        self.T = T

    def forward(self, y_s: torch.Tensor, y_t: torch.Tensor) -> torch.Tensor:
        log_p_student = F.log_softmax(y_s / self.T, dim=1)
        p_teacher = F.softmax(y_t / self.T, dim=1)
        kl_sum = F.kl_div(log_p_student, p_teacher, reduction="sum")
        return kl_sum * (self.T**2) / y_s.shape[0]


def normalize(logit: torch.Tensor) -> torch.Tensor:
    """Z-score each sample's logits over the classes (Sun et al., "Logit Standardization in
    Knowledge Distillation", CVPR 2024, eq. 8): (z - mean) / (1e-7 + std), std with Bessel's
    correction as the official code computes it. Shapes: (B, C) -> (B, C)."""
    mean = logit.mean(dim=-1, keepdim=True)
    std = logit.std(dim=-1, keepdim=True)
    return (logit - mean) / (1e-7 + std)


def kd_loss(logits_student_in: torch.Tensor, logits_teacher_in: torch.Tensor, temperature: float,
            logit_stand: bool) -> torch.Tensor:
    """T^2 * mean over the batch of KL(softmax(z_t / T) || softmax(z_s / T)), with both logits
    z-scored first when ``logit_stand`` (Sun et al., CVPR 2024). Shapes: (B, C), (B, C) -> scalar."""
    logits_student = normalize(logits_student_in) if logit_stand else logits_student_in
    logits_teacher = normalize(logits_teacher_in) if logit_stand else logits_teacher_in
    log_p_student = F.log_softmax(logits_student / temperature, dim=1)
    p_teacher = F.softmax(logits_teacher / temperature, dim=1)
    return F.kl_div(log_p_student, p_teacher, reduction="none").sum(1).mean() * temperature**2


@register
class KD(Distiller):
    """Logit distillation only: loss = gamma*CE + alpha*KL (defaults -r 0.1 -a 0.9 -b 0)."""

    display_name = "KD"
    paper = "Hinton, Vinyals & Dean, Distilling the Knowledge in a Neural Network, NIPS-W 2015"
    teacher_reads = "logits"  # a teacher bank can stand in for the teacher
    flags = (Flag("--kd_T", 4.0, "temperature of the KD term (-a) of every method", above=0), LOGIT_STAND)
    default_gamma = 0.1
    default_alpha = 0.9
    default_beta = 0.0
    uses_features = False
    has_method_loss = False
