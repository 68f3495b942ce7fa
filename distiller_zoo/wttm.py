"""WTTM: Zheng & Yang, "Knowledge Distillation Based on Transformed Teacher Matching", ICLR 2024.

Transformed teacher matching drops the temperature on the student side: the student's plain
softmax matches the teacher's power-transformed distribution p_t^l / sum(p_t^l) (l = 1/T, the
same as softmax(z_t / T)). Weighted TTM scales each sample's KL by the power sum
U_l(p_t) = sum_c p_t,c^l = exp((1 - l) H_l(p_t)), H_l the Renyi entropy of order l, so samples
with smoother teacher outputs weigh more."""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distiller_zoo.base import DistillContext, Distiller, Features, Flag, register

__all__ = ["WTTM", "transformed_teacher_kl"]


def transformed_teacher_kl(y_s: Tensor, y_t: Tensor, l: float) -> tuple[Tensor, Tensor]:  # noqa: E741
    """Per sample, KL(p_t^l / U || softmax(y_s)) and log U, U = sum_c softmax(y_t)_c^l: the power transform of
    TTM and WTTM, in log space (l * log_softmax, logsumexp) so that tiny teacher probabilities cannot
    underflow. Shapes: y_s, y_t (B, C) logits -> (B,), (B,)."""
    log_powered = l * F.log_softmax(y_t, dim=1)
    log_norm = torch.logsumexp(log_powered, dim=1, keepdim=True)
    transformed = torch.exp(log_powered - log_norm)
    kl = F.kl_div(F.log_softmax(y_s, dim=1), transformed, reduction="none").sum(dim=1)
    return kl, log_norm.squeeze(1)


class WTTM(nn.Module):
    """mean_i( U_i * KL(p_t,i^l / U_i || softmax(y_s,i)) ), U_i = sum_c softmax(y_t,i)_c^l.

    As the official distiller_zoo/wttm.py (zkxufo/TTM), with the power transform computed in log
    space (``transformed_teacher_kl``); with l = 1 the transform is the identity and U = 1 (plain
    KL at temperature 1).
    Shapes: y_s, y_t (B, C) logits -> scalar.
    """

    def __init__(self, l: float) -> None:  # noqa: E741 (the official name of the exponent)
        super().__init__()
        self.l = l

    def forward(self, y_s: Tensor, y_t: Tensor) -> Tensor:
        kl, log_norm = transformed_teacher_kl(y_s, y_t, self.l)
        return torch.mean(torch.exp(log_norm) * kl)


@register
class WeightedTransformedTeacher(Distiller):
    """WTTM(--wttm_l) between the student's and the teacher's logits (CE weight -r 1, as the
    official train_student.py). TTM (distiller_zoo/ttm.py) is this class with its own loss module,
    exponent flag and weight."""

    loss_module: ClassVar[type[nn.Module]] = WTTM  # built with the value of flags[0], the exponent

    display_name = "WTTM"
    paper = "Zheng & Yang, Knowledge Distillation Based on Transformed Teacher Matching, ICLR 2024"
    teacher_reads = "logits"  # a teacher bank can stand in for the teacher
    flags = (Flag("--wttm_l", 0.2, "WTTM exponent of the teacher's power transform (gamma = 1/T in the paper)",
                  above=0),)
    # -b 4 with --wttm_l 0.2: the WTTM weight and exponent of the official README's command line
    # (there WTTM is added to CRD); the paper tunes T and beta per pair (its appendix A.4).
    default_gamma = 1.0
    default_alpha = 0.0
    default_beta = 4.0
    uses_features = False

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.criterion = self.loss_module(getattr(context.opt, self.flags[0].dest))

    def loss(self, features: Features) -> Tensor:
        return self.criterion(features.student_logits, features.teacher_logits)
