"""DCD: Giakoumoglou & Stathaki, "Discriminative and Consistent Representation Distillation", 2024."""
from __future__ import annotations

from torch import Tensor

from distiller_zoo.base import DistillContext, Distiller, Features, register
from distiller_zoo.losses import DCDLoss


@register("dcd")
class DCD(Distiller):
    """In-batch contrastive CE over student-teacher embedding similarities with learnable
    temperature and bias, plus a KL consistency term (tau and b are trained)."""

    default_beta = 1.0

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.criterion = DCDLoss(context.loss_options())

    def loss(self, features: Features) -> Tensor:
        return self.criterion(features.student[-1], features.teacher[-1])
