"""TTM: Zheng & Yang, "Knowledge Distillation Based on Transformed Teacher Matching", ICLR 2024.

Transformed teacher matching: the student's plain softmax (no temperature) matches the teacher's
power-transformed distribution p_t^l / sum(p_t^l), l = 1/T (the same as softmax(z_t / T)), by
KL divergence averaged over the batch. The paper shows this equals KD plus a Renyi-entropy
regulariser on the student. WTTM (``--distill wttm``) is TTM with per-sample weights; this is the
official ``--distill ttm``."""
from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from distiller_zoo.base import Flag, register
from distiller_zoo.wttm import WeightedTransformedTeacher, transformed_teacher_kl

__all__ = ["TTM"]


class TTM(nn.Module):
    """mean_i KL(p_t,i^l / sum_c p_t,i,c^l || softmax(y_s,i)).

    As the official distiller_zoo/ttm.py (zkxufo/TTM), with the power transform taken in log space
    (``distiller_zoo.wttm.transformed_teacher_kl``) so that tiny teacher probabilities cannot
    underflow. Shapes: y_s, y_t (B, C) logits -> scalar."""

    def __init__(self, l: float) -> None:  # noqa: E741 (the official name of the exponent)
        super().__init__()
        self.l = l

    def forward(self, y_s: Tensor, y_t: Tensor) -> Tensor:
        kl, _ = transformed_teacher_kl(y_s, y_t, self.l)
        return kl.mean()


@register
class TransformedTeacher(WeightedTransformedTeacher):
    """TTM(--ttm_l) between the student's and the teacher's logits (CE weight -r 1): WTTM without the
    per-sample weights."""

    loss_module = TTM
    display_name = "TTM"
    flags = (Flag("--ttm_l", 0.1, "TTM exponent of the teacher's power transform (gamma = 1/T in the paper)",
                  above=0),)
    # -r 1 -b 45 --ttm_l 0.1: the official README's TTM command line (vgg13 -> vgg8); the paper
    # tunes T and beta per pair (its appendix A.4).
    default_beta = 45.0
