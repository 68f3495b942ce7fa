"""RRD: Giakoumoglou & Stathaki, "Relational Representation Distillation", 2024."""
from __future__ import annotations

from torch import Tensor

from distiller_zoo.base import DistillContext, Distiller, Features, register
from distiller_zoo.losses import RRDLoss


@register("rrd")
class RRD(Distiller):
    """Student/teacher similarity distributions over a queue of --nce_k past teacher embeddings
    (temperatures --nce_t_s, --nce_t_t)."""

    default_beta = 1.0

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.criterion = RRDLoss(context.loss_options())

    def loss(self, features: Features) -> Tensor:
        return self.criterion(features.student[-1], features.teacher[-1])
