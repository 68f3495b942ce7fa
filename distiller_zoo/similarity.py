"""SP: Tung & Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019."""
from __future__ import annotations

from torch import Tensor

from distiller_zoo.base import DistillContext, Distiller, Features, register
from distiller_zoo.losses import Similarity


@register("similarity")
class SP(Distiller):
    """Batch similarity matrices of the last feature map (feats[-2])."""

    default_beta = 3000.0

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.criterion = Similarity()

    def loss(self, features: Features) -> Tensor:
        return sum(self.criterion([features.student[-2]], [features.teacher[-2]]))
