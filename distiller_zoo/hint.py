"""FitNet: Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015."""
from __future__ import annotations

from torch import Tensor

from distiller_zoo.base import DistillContext, Distiller, Features, register
from distiller_zoo.losses import HintLoss
from helper.errors import UserError
from models.util import ConvReg


@register("hint")
class Hint(Distiller):
    """MSE between ConvReg(student feats[hint_layer]) and teacher feats[hint_layer]."""

    default_beta = 100.0

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        layer = context.opt.hint_layer
        usable = len(context.student_shapes) - 1  # the pooled vector is not a map
        if not 0 <= layer < usable or layer >= len(context.teacher_shapes) - 1:
            raise UserError(f"--hint_layer {layer} is outside the feature maps of this pair (valid: 0 to "
                            f"{min(usable, len(context.teacher_shapes) - 1) - 1}; the default is 2).")
        self.layer = layer
        self.regressor = ConvReg(context.student_shapes[layer], context.teacher_shapes[layer])
        self.criterion = HintLoss()

    def loss(self, features: Features) -> Tensor:
        return self.criterion(self.regressor(features.student[self.layer]), features.teacher[self.layer])
