"""SD-DKD: Wei, Luo & Luo, "Scale Decoupled Distillation", CVPR 2024, on top of DKD.

The multi-scale logits and the consistent/complementary region weights of SD-KD
(``distiller_zoo/sdd_kd.py``), with DKD (Zhao et al., CVPR 2022) as the per-cell loss: the
weighted DKD of every cell, averaged over cells and images, ramped in over --dkd_warmup epochs
(official ``multi_dkd`` in mdistiller/distillers/SDD_DKD.py of shicaiwei123/SDD-CVPR2024).

The official runs (configs/cifar100/sdd_dkd) use DKD's settings: CE weight 1, alpha 1, T 4,
warm-up 20 epochs and the per-pair beta of DKD (8; 2 for resnet56 -> resnet20 and resnet110 ->
resnet32; 6 for vgg13 and wrn_40_2 -> wrn_* pairs), with the scales [1, 2, 4] except vgg13 ->
vgg8 ([1, 2]).
"""
from __future__ import annotations

from torch import Tensor

from distiller_zoo.base import DistillContext, Features, register, warmup_factor
from distiller_zoo.dkd import DecoupledKD, dkd_per_sample
from distiller_zoo.sdd_kd import SDD_COMPLEMENTARY_WEIGHT, SDD_MAX_SCALE, ScaleDecoupledBase, region_weights

__all__ = ["sdd_dkd_loss"]

DKD_FLAGS = tuple(flag for flag in DecoupledKD.flags
                  if flag.name in ("--dkd_alpha", "--dkd_beta", "--dkd_T", "--dkd_warmup"))


def sdd_dkd_loss(student_cells: Tensor, teacher_cells: Tensor, labels: Tensor, alpha: float, beta: float,
                 temperature: float, complementary_weight: float = 2.0) -> Tensor:
    """mean over images and cells of region weight * DKD(cell) (alpha * TCKD + beta * NCKD).

    Shapes: student_cells, teacher_cells (B, N, K) multi-scale logits, labels (B,) -> scalar."""
    batch, cells, classes = student_cells.shape
    per_cell = dkd_per_sample(student_cells.reshape(-1, classes), teacher_cells.reshape(-1, classes),
                              labels.repeat_interleave(cells), alpha, beta, temperature).reshape(batch, cells)
    return (region_weights(teacher_cells, labels, complementary_weight) * per_cell).mean()


@register
class ScaleDecoupledDKD(ScaleDecoupledBase):
    """warm-up(epoch) * sdd_dkd_loss(--dkd_alpha, --dkd_beta, --dkd_T) of the multi-scale logits (CE weight -r 1)."""

    display_name = "SD-DKD"
    paper = "Wei, Luo & Luo, Scale Decoupled Distillation, CVPR 2024 (on DKD)"
    warmup_flag = "--dkd_warmup"
    flags = (*DKD_FLAGS, SDD_MAX_SCALE, SDD_COMPLEMENTARY_WEIGHT)
    default_gamma = 1.0
    default_alpha = 0.0
    default_beta = 1.0

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        opt = context.opt
        self.alpha, self.beta, self.temperature = opt.dkd_alpha, opt.dkd_beta, opt.dkd_T
        self.warmup_epochs = opt.dkd_warmup

    def loss(self, features: Features) -> Tensor:
        student, teacher = self.cells(features)
        weight = warmup_factor(features.progress.epoch, self.warmup_epochs)
        return weight * sdd_dkd_loss(student, teacher, features.labels, self.alpha, self.beta, self.temperature,
                                     self.complementary_weight)
