"""Vanilla knowledge distillation (Hinton et al., 2015, "Distilling the Knowledge in a Neural Network")."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


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
