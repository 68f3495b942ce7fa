"""AB: Heo et al., "Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden
Neurons", AAAI 2019."""
from __future__ import annotations

from torch import Tensor, nn

from distiller_zoo.base import DistillContext, Distiller, Features, register
from distiller_zoo.losses import ABLoss
from models.util import Connector


@register("abound")
class AB(Distiller):
    """Init stage: connector + student feature modules learn the teacher's activation boundaries
    (pre-ReLU feats[1:-1]); main stage: CE (+KD) only, connector frozen."""

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
