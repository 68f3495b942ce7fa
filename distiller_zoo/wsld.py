"""WSLD: Zhou, Song, Chen, Zhou, Wang, Yuan & Zhang, "Rethinking Soft Labels for Knowledge
Distillation: A Bias-Variance Tradeoff Perspective", ICLR 2021.

Weighted soft labels: each sample's soft-label cross-entropy is weighted by
w = 1 - exp(-CE_student / CE_teacher) (hard-label cross-entropies of the detached logits), so
samples the teacher fits much better than the student count fully and samples the student
already fits as well as the teacher are down-weighted. The loss includes the hard-label CE."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distiller_zoo.base import DistillContext, Distiller, Features, Flag, register

__all__ = ["WSLDLoss"]


def wsld_sample_weights(fc_t: Tensor, fc_s: Tensor, label: Tensor) -> Tensor:
    """w_i = 1 - exp(-max(CE_s,i / (CE_t,i + 1e-7), 0)) from the detached logits at temperature 1.

    Shapes: fc_t, fc_s (B, C), label (B,) -> (B, 1), values in [0, 1), no gradient.
    """
    ce_student = F.cross_entropy(fc_s.detach(), label, reduction="none")
    ce_teacher = F.cross_entropy(fc_t.detach(), label, reduction="none")
    ratio = (ce_student / (ce_teacher + 1e-7)).clamp(min=0)
    return (1 - torch.exp(-ratio)).unsqueeze(1)


class WSLDLoss(nn.Module):
    """CE(fc_s, label) + 2.5 * T^2 * mean_i(w_i * sum_c -softmax(fc_t / T)_c log_softmax(fc_s / T)_c).

    The reference implementation (the authors' WSLDistiller, as kept in the DCD/RRD code) with the
    number of classes taken from the logits and no device assumption. T is ``opt.wsld_T`` when the
    options have it (--wsld_T), else ``opt.nce_t`` as the reference reads it. Note the teacher
    logits come FIRST; they are a fixed target (detached), and the weights w carry no gradient.
    Shapes: fc_t, fc_s (B, C), label (B,) -> scalar.
    """

    def __init__(self, opt: Any) -> None:
        super().__init__()
        self.T = float(opt.wsld_T if hasattr(opt, "wsld_T") else opt.nce_t)
        self.alpha = 2.5

    def forward(self, fc_t: Tensor, fc_s: Tensor, label: Tensor) -> Tensor:
        teacher_soft_label = F.softmax(fc_t.detach() / self.T, dim=1)
        soft_cross_entropy = -(teacher_soft_label * F.log_softmax(fc_s / self.T, dim=1)).sum(dim=1, keepdim=True)
        weighted = wsld_sample_weights(fc_t, fc_s, label) * soft_cross_entropy
        soft_loss = self.T**2 * weighted.mean()
        return F.cross_entropy(fc_s, label) + self.alpha * soft_loss


@register
class WeightedSoftLabels(Distiller):
    """WSLDLoss(teacher logits, student logits, labels) at temperature --wsld_T. Its value already
    holds the hard-label CE, so the defaults are -r 0 -a 0 -b 1 (CE is not counted twice)."""

    display_name = "WSLD"
    paper = ("Zhou et al., Rethinking Soft Labels for Knowledge Distillation: A Bias-Variance Tradeoff Perspective, "
             "ICLR 2021")
    teacher_reads = "logits"  # a teacher bank can stand in for the teacher
    flags = (Flag("--wsld_T", 2.0, "WSLD temperature", above=0),)
    default_gamma = 0.0
    default_alpha = 0.0
    default_beta = 1.0
    uses_features = False

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.criterion = WSLDLoss(context.opt)

    def loss(self, features: Features) -> Tensor:
        return self.criterion(features.teacher_logits, features.student_logits, features.labels)
