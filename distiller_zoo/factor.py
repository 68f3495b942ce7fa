"""FT: Kim et al., "Paraphrasing Complex Network: Network Compression via Factor Transfer",
NeurIPS 2018 (eq. 3)."""
from __future__ import annotations

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distiller_zoo.base import INIT_EPOCHS, DistillContext, Distiller, Features, register
from models.util import Paraphraser, Translator, pool_to_smaller

__all__ = ["FactorTransfer"]


class FactorTransfer(nn.Module):
    """mean(|n(s) - n(t)|^p2) with n(f) = L2-normalize(mean_c f^p1, flattened).

    Shapes: factor_s (B, C_s, H, W), factor_t (B, C_t, H', W') -> scalar; the larger map is
    pooled to the smaller spatial size. Paraphraser and translator live in the method.
    """

    def __init__(self, p1: int = 2, p2: int = 1) -> None:
        super().__init__()
        self.p1 = p1
        self.p2 = p2

    def forward(self, factor_s: torch.Tensor, factor_t: torch.Tensor) -> torch.Tensor:
        factor_s, factor_t = pool_to_smaller(factor_s, factor_t)
        difference = (self.factor(factor_s) - self.factor(factor_t)).abs()
        if self.p2 != 1:
            difference = difference.pow(self.p2)
        return difference.mean()

    def factor(self, f: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, H*W) normalised channel mean of f^p1."""
        return F.normalize(f.pow(self.p1).mean(1).reshape(f.shape[0], -1), dim=1)


# Students for which the reference pre-trains the paraphraser with lr 0.01.
_SMALL_INIT_LR = {"resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
                  "resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2"}


@register
class FactorTransferMethod(Distiller):
    """Init stage: a paraphraser learns to reconstruct the teacher's feats[-2]; main stage: the
    student's translator matches the frozen paraphraser's factors."""

    display_name = "FT"
    paper = "Kim et al., Paraphrasing Complex Network: Network Compression via Factor Transfer, NeurIPS 2018"
    flags = (INIT_EPOCHS,)
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
