"""FitNet: Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distiller_zoo.base import DistillContext, Distiller, Features, Flag, register
from helper.errors import UserError
from models.util import ConvReg

__all__ = ["HintLoss"]


class HintLoss(nn.Module):
    """Mean squared error between the (regressed) student hint and the teacher hint.

    Shapes: f_s, f_t of equal shape -> scalar. The regressor (ConvReg) lives in the method.
    """

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(f_s, f_t)


@register
class Hint(Distiller):
    """MSE between ConvReg(student feats[hint_layer]) and teacher feats[hint_layer]."""

    display_name = "FitNet"
    paper = "Romero et al., FitNets: Hints for Thin Deep Nets, ICLR 2015"
    flags = (Flag("--hint_layer", 2, "feature index whose map the student regresses", minimum=0),)
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
