"""FSP: Yim et al., "A Gift from Knowledge Distillation: Fast Optimization, Network Minimization
and Transfer Learning", CVPR 2017."""
from __future__ import annotations

from torch import Tensor, nn

from distiller_zoo.base import DistillContext, Distiller, Features, register
from distiller_zoo.losses import FSP
from helper.errors import UserError


@register("fsp")
class FSPMethod(Distiller):
    """Init stage: student feature modules match the teacher's FSP matrices (feats[:-1]);
    main stage: CE (+KD) only."""

    default_beta = 50.0
    has_method_loss = False
    init_stage = True

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        try:
            self.criterion = FSP(context.student_shapes[:-1], context.teacher_shapes[:-1])
        except ValueError as error:
            raise UserError(f"--distill fsp cannot be used with student '{context.opt.model_s}' and teacher "
                            f"'{context.opt.model_t}': {error}") from None

    def init_modules(self, student: nn.Module) -> list[nn.Module]:
        return [student.get_feat_modules()]

    def init_loss(self, features: Features) -> Tensor:
        return sum(self.criterion(features.student[:-1], features.teacher[:-1]))
