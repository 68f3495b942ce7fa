"""FT: Kim et al., "Paraphrasing Complex Network: Network Compression via Factor Transfer", NeurIPS 2018."""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distiller_zoo.base import DistillContext, Distiller, Features, register
from distiller_zoo.losses import FactorTransfer
from models.util import Paraphraser, Translator

# Students for which the reference pre-trains the paraphraser with lr 0.01.
_SMALL_INIT_LR = {"resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
                  "resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2"}


@register("factor")
class FT(Distiller):
    """Init stage: a paraphraser learns to reconstruct the teacher's feats[-2]; main stage: the
    student's translator matches the frozen paraphraser's factors."""

    default_beta = 200.0
    init_stage = True

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.paraphraser = Paraphraser(context.teacher_shapes[-2])
        self.translator = Translator(context.student_shapes[-2], context.teacher_shapes[-2])
        self.criterion = FactorTransfer()

    def init_modules(self, student: nn.Module) -> list[nn.Module]:
        return [self.paraphraser]

    def init_loss(self, features: Features) -> Tensor:
        _, reconstruction = self.paraphraser(features.teacher[-2])
        return F.mse_loss(reconstruction, features.teacher[-2])

    def init_learning_rate(self, opt: argparse.Namespace) -> float:
        return 0.01 if opt.model_s in _SMALL_INIT_LR else opt.learning_rate

    def loss(self, features: Features) -> Tensor:
        with torch.no_grad():
            factor_teacher = self.paraphraser(features.teacher[-2], is_factor=True)
        return self.criterion(self.translator(features.student[-2]), factor_teacher)

    def frozen_modules(self) -> list[nn.Module]:
        return [self.paraphraser]
