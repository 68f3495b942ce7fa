"""VID: Ahn et al., "Variational Information Distillation for Knowledge Transfer", CVPR 2019."""
from __future__ import annotations

from torch import Tensor, nn

from distiller_zoo.base import DistillContext, Distiller, Features, register
from distiller_zoo.losses import VIDLoss


@register("vid")
class VID(Distiller):
    """Gaussian likelihood of each teacher stage map under a regressor of the student's, summed."""

    default_beta = 1.0

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        pairs = zip(context.student_shapes[1:-1], context.teacher_shapes[1:-1])
        self.criteria = nn.ModuleList(VIDLoss(s[1], t[1], t[1]) for s, t in pairs)

    def loss(self, features: Features) -> Tensor:
        return sum(criterion(s, t) for criterion, s, t in
                   zip(self.criteria, features.student[1:-1], features.teacher[1:-1]))
