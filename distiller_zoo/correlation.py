"""CC: Peng et al., "Correlation Congruence for Knowledge Distillation", ICCV 2019.

RepDistiller's simplified form on linear embeddings of the pooled features."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from distiller_zoo.base import FEAT_DIM, DistillContext, Distiller, Features, register
from models.util import LinearEmbed

__all__ = ["Correlation"]


class Correlation(nn.Module):
    """mean over i of sum_k d[i,k] * d[i+1,k], with d = |f_s - f_t| and i = 0..B-2.

    Shapes: f_s, f_t (B, D) embeddings -> scalar.
    """

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        delta = (f_s - f_t).abs()
        return (delta[:-1] * delta[1:]).sum(1).mean()


@register
class CorrelationCongruence(Distiller):
    """Correlation congruence of linear embeddings (to --feat_dim) of the pooled features."""

    display_name = "CC"
    paper = "Peng et al., Correlation Congruence for Knowledge Distillation, ICCV 2019"
    teacher_reads = "embedding"  # a teacher bank can stand in for the teacher
    flags = (FEAT_DIM,)
    default_beta = 0.02

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        feat_dim = context.opt.feat_dim
        self.embed_student = LinearEmbed(context.student_shapes[-1][1], feat_dim)
        self.embed_teacher = LinearEmbed(context.teacher_shapes[-1][1], feat_dim)
        self.criterion = Correlation()

    def loss(self, features: Features) -> Tensor:
        return self.criterion(self.embed_student(features.student[-1]), self.embed_teacher(features.teacher[-1]))
