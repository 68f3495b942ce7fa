"""AT: Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017."""
from __future__ import annotations

from torch import Tensor

from distiller_zoo.base import DistillContext, Distiller, Features, register
from distiller_zoo.losses import Attention


@register("attention")
class AT(Distiller):
    """Attention-map matching on every stage output (feats[1:-1]), summed over layers."""

    default_beta = 1000.0

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.criterion = Attention()

    def loss(self, features: Features) -> Tensor:
        return sum(self.criterion(features.student[1:-1], features.teacher[1:-1]))
