"""TTM: Zheng & Yang, "Knowledge Distillation Based on Transformed Teacher Matching", ICLR 2024.

Transformed teacher matching: the student's plain softmax (no temperature) matches the teacher's
power-transformed distribution p_t^l / sum(p_t^l), l = 1/T (the same as softmax(z_t / T)), by
KL divergence averaged over the batch. The paper shows this equals KD plus a Renyi-entropy
regulariser on the student. WTTM (``--distill wttm``) is TTM with per-sample weights; this is the
official ``--distill ttm``."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distiller_zoo.base import DistillContext, Distiller, Features, Flag, register

__all__ = ["TTM"]


class TTM(nn.Module):
    """mean_i KL(p_t,i^l / sum_c p_t,i,c^l || softmax(y_s,i)).

    As the official distiller_zoo/ttm.py (zkxufo/TTM), with the power transform taken in log space
    (l * log_softmax, then log_softmax again normalises) so that tiny teacher probabilities cannot
    underflow. Shapes: y_s, y_t (B, C) logits -> scalar."""

    def __init__(self, l: float) -> None:  # noqa: E741 (the official name of the exponent)
        super().__init__()
        self.l = l

    def forward(self, y_s: Tensor, y_t: Tensor) -> Tensor:
        transformed = F.softmax(self.l * F.log_softmax(y_t, dim=1), dim=1)
        return F.kl_div(F.log_softmax(y_s, dim=1), transformed, reduction="batchmean")


@register
class TransformedTeacher(Distiller):
    """TTM(--ttm_l) between the student's and the teacher's logits (CE weight -r 1)."""

    display_name = "TTM"
    paper = "Zheng & Yang, Knowledge Distillation Based on Transformed Teacher Matching, ICLR 2024"
    teacher_reads = "logits"  # a teacher bank can stand in for the teacher
    flags = (Flag("--ttm_l", 0.1, "TTM exponent of the teacher's power transform (gamma = 1/T in the paper)",
                  above=0),)
    # -r 1 -b 45 --ttm_l 0.1: the official README's TTM command line (vgg13 -> vgg8); the paper
    # tunes T and beta per pair (its appendix A.4).
    default_gamma = 1.0
    default_alpha = 0.0
    default_beta = 45.0
    uses_features = False

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.criterion = TTM(context.opt.ttm_l)

    def loss(self, features: Features) -> Tensor:
        return self.criterion(features.student_logits, features.teacher_logits)
