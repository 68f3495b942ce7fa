"""NST: Huang & Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer", 2017."""
from __future__ import annotations

from torch import Tensor

from distiller_zoo.base import DistillContext, Distiller, Features, register
from distiller_zoo.losses import NSTLoss


@register("nst")
class NST(Distiller):
    """Polynomial-kernel MMD between channel activation distributions of each stage, summed."""

    default_beta = 50.0

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.criterion = NSTLoss()

    def loss(self, features: Features) -> Tensor:
        return sum(self.criterion(features.student[1:-1], features.teacher[1:-1]))
