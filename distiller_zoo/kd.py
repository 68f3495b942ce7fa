"""KD: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", NIPS workshop 2015.

The KL term is part of every run (weighted by -a); ``--distill kd`` adds nothing else."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from distiller_zoo.base import Distiller, Flag, register

__all__ = ["DistillKL"]


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


@register
class KD(Distiller):
    """Logit distillation only: loss = gamma*CE + alpha*KL (defaults -r 0.1 -a 0.9 -b 0)."""

    display_name = "KD"
    paper = "Hinton, Vinyals & Dean, Distilling the Knowledge in a Neural Network, NIPS-W 2015"
    flags = (Flag("--kd_T", 4.0, "KD temperature (the -a term of every method)", above=0),)
    default_gamma = 0.1
    default_alpha = 0.9
    default_beta = 0.0
    uses_features = False
    has_method_loss = False
