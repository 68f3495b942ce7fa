"""AB: Heo et al., "Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden
Neurons", AAAI 2019 (eq. 5, hinge form)."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from distiller_zoo.base import INIT_EPOCHS, DistillContext, Distiller, Features, register
from models.util import Connector

__all__ = ["ABLoss"]


class ABLoss(nn.Module):
    """Per-layer alternative-L2 activation-boundary loss, weighted 2^(i - feat_num + 1).

    Each loss = w_i * criterion_alternative_L2(s, t) / B / 1000 * 3. Shapes: g_s, g_t lists of
    pre-activation (B, C, H, W) maps of equal shape (student maps already through the
    connector) -> list of scalars.
    """

    def __init__(self, feat_num: int, margin: float = 1.0) -> None:
        super().__init__()
        self.w = [2 ** (i - feat_num + 1) for i in range(feat_num)]
        self.margin = margin

    def forward(
        self, g_s: list[torch.Tensor], g_t: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        batch_size = g_s[0].shape[0]
        return [
            weight * self.criterion_alternative_L2(source, target, self.margin) / batch_size / 1000 * 3
            for weight, source, target in zip(self.w, g_s, g_t)
        ]

    @staticmethod
    def criterion_alternative_L2(
        source: torch.Tensor, target: torch.Tensor, margin: float
    ) -> torch.Tensor:
        """Sum of (s + m)^2 where s > -m and t <= 0, plus (s - m)^2 where s <= m and t > 0."""
        teacher_off = (source > -margin) & (target <= 0)
        teacher_on = (source <= margin) & (target > 0)
        loss = (source + margin).pow(2) * teacher_off.to(source.dtype) + (
            source - margin
        ).pow(2) * teacher_on.to(source.dtype)
        return loss.abs().sum()


@register
class ActivationBoundaries(Distiller):
    """Init stage: connector + student feature modules learn the teacher's activation boundaries
    (pre-ReLU feats[1:-1]); main stage: CE (+KD) only, connector frozen."""

    display_name = "AB"
    paper = "Heo et al., Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden Neurons, AAAI 2019"
    flags = (INIT_EPOCHS,)
    default_beta = 1.0
    uses_preact = True
    has_method_loss = False
    init_stage = True

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.connector = Connector(context.student_shapes[1:-1], context.teacher_shapes[1:-1])
        self.criterion = ABLoss(len(context.student_shapes[1:-1]))

    def init_modules(self, student: nn.Module) -> list[nn.Module]:
        return [self.connector, student.get_feat_modules()]

    def init_loss(self, features: Features) -> Tensor:
        return sum(self.criterion(self.connector(features.student[1:-1]), features.teacher[1:-1]))

    def frozen_modules(self) -> list[nn.Module]:
        return [self.connector]
