"""PKT: Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer", ECCV 2018."""
from __future__ import annotations

from torch import Tensor

from distiller_zoo.base import DistillContext, Distiller, Features, register
from distiller_zoo.losses import PKT as PKTLoss


@register("pkt")
class PKT(Distiller):
    """KL between cosine-similarity distributions of the pooled features."""

    default_beta = 30000.0

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.criterion = PKTLoss()

    def loss(self, features: Features) -> Tensor:
        return self.criterion(features.student[-1], features.teacher[-1])
