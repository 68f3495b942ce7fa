"""RKD: Park et al., "Relational Knowledge Distillation", CVPR 2019."""
from __future__ import annotations

from torch import Tensor

from distiller_zoo.base import DistillContext, Distiller, Features, register
from distiller_zoo.losses import RKDLoss


@register("rkd")
class RKD(Distiller):
    """Distance (x25) and angle (x50) relations of the pooled features."""

    default_beta = 1.0

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.criterion = RKDLoss()

    def loss(self, features: Features) -> Tensor:
        return self.criterion(features.student[-1], features.teacher[-1])
