"""SD-KD: Wei, Luo & Luo, "Scale Decoupled Distillation", CVPR 2024, on top of KD.

The map a network average-pools into its classifier is also pooled to 2x2 and 4x4 cells (from
its 4x4 average pool, as the official SPP module does); every cell, and the whole map, goes
through the classifier (bias included), giving 1 + 4 + 16 logit vectors per image for the
scales M = [1, 2, 4] (--sdd_max_scale 4). The KD loss is taken between the student's and the
teacher's logits of each cell. A cell whose teacher prediction is right exactly when the
teacher's global prediction is right carries consistent knowledge (weight 1); otherwise it is
complementary (weight --sdd_complementary_weight, 2 in the official code). The loss is the
weighted sum over cells and images divided by their number (the official
``sdd_kd_loss`` in mdistiller/distillers/KD.py of shicaiwei123/SDD-CVPR2024).

The official SD-KD runs (configs/cifar100/sdd_kd, the KD settings of mdistiller: CE weight 0.1,
KD weight 0.9, T = 4, no warm-up) are ``-r 0.1 -b 0.9 --kd_T 4`` here; the scales are [1, 2, 4]
except for resnet32x4 -> resnet8x4 and vgg13 -> vgg8 ([1, 2]). ``--distill sdd_dkd`` is SDD on
top of DKD.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distiller_zoo.base import DistillContext, Distiller, Features, Flag, register
from distiller_zoo.kd import KD
from models import get_classifier, map_before_pool

__all__ = ["multi_scale_logits", "region_weights", "sdd_kd_loss"]

# Flags shared with sdd_dkd.py (declared once here).
SDD_MAX_SCALE = Flag("--sdd_max_scale", 4, "SDD: distil the logits of the 1x1, 2x2 and 4x4 cells up to this size "
                     "(the official M = [1,2,4]; 2 is M = [1,2], official for resnet32x4 -> resnet8x4 and vgg13 -> "
                     "vgg8)", minimum=1, maximum=4)
SDD_COMPLEMENTARY_WEIGHT = Flag("--sdd_complementary_weight", 2.0, "SDD: weight of the cells whose teacher "
                                "prediction is right where the global one is wrong, or the reverse (consistent "
                                "cells weigh 1)", minimum=0)
KD_TEMPERATURE = next(flag for flag in KD.flags if flag.name == "--kd_T")


def scales_up_to(max_scale: int) -> tuple[int, ...]:
    """The official scale sets M: 1 -> (1,), 2 (or 3) -> (1, 2), 4 -> (1, 2, 4)."""
    return tuple(scale for scale in (1, 2, 4) if scale <= max_scale)


def multi_scale_logits(feature_map: Tensor, classifier: nn.Linear, scales: tuple[int, ...]) -> Tensor:
    """The classifier applied to every cell of the map average-pooled to s x s for each scale s.

    The map is first pooled to 4x4 and each scale pooled from that (official SPP). Cells are
    ordered scale by scale, row-major: cell 0 is the global (1x1) one when scales start with 1.
    Shapes: feature_map (B, C, H, W) -> (B, sum s^2, K)."""
    grid = F.adaptive_avg_pool2d(feature_map, (4, 4))
    cells = torch.cat([F.adaptive_avg_pool2d(grid, (scale, scale)).flatten(2) for scale in scales], dim=2)
    return classifier(cells.transpose(1, 2))


def region_weights(teacher_cells: Tensor, labels: Tensor, complementary_weight: float) -> Tensor:
    """1 where a cell's teacher prediction is right exactly when the global cell's (cell 0) is,
    ``complementary_weight`` elsewhere. Shapes: teacher_cells (B, N, K), labels (B,) -> (B, N)."""
    correct = teacher_cells.argmax(dim=2) == labels[:, None]
    complementary = correct != correct[:, :1]
    return torch.where(complementary, complementary_weight, 1.0).to(teacher_cells.dtype)


def sdd_kd_loss(student_cells: Tensor, teacher_cells: Tensor, labels: Tensor, temperature: float,
                complementary_weight: float = 2.0) -> Tensor:
    """mean over images and cells of region weight * T^2 KL(softmax(t / T) || softmax(s / T)).

    Shapes: student_cells, teacher_cells (B, N, K) multi-scale logits, labels (B,) -> scalar."""
    log_p_student = F.log_softmax(student_cells / temperature, dim=2)
    p_teacher = F.softmax(teacher_cells / temperature, dim=2)
    per_cell = F.kl_div(log_p_student, p_teacher, reduction="none").sum(2) * temperature**2
    return (region_weights(teacher_cells, labels, complementary_weight) * per_cell).mean()


def network_cells(model: nn.Module, scales: tuple[int, ...], feats: list[Tensor]) -> Tensor:
    """``multi_scale_logits`` of ``model`` for the batch whose ``is_feat`` features are ``feats``."""
    return multi_scale_logits(map_before_pool(model, feats), get_classifier(model), scales)


class ScaleDecoupledBase(Distiller):
    """Builds the student's and the teacher's multi-scale logits (the networks are held by functions,
    so that they are not registered as this method's modules)."""

    flags = (SDD_MAX_SCALE, SDD_COMPLEMENTARY_WEIGHT)
    uses_features = True

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        scales = scales_up_to(context.opt.sdd_max_scale)
        self.complementary_weight = context.opt.sdd_complementary_weight
        self.student_cells = partial(network_cells, context.student, scales)
        self.teacher_cells = partial(network_cells, context.teacher, scales)

    def cells(self, features: Features) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            teacher = self.teacher_cells(features.teacher)
        return self.student_cells(features.student), teacher


@register
class ScaleDecoupledKD(ScaleDecoupledBase):
    """sdd_kd_loss(--kd_T) of the multi-scale logits (CE weight -r 0.1, loss weight -b 0.9)."""

    display_name = "SD-KD"
    paper = "Wei, Luo & Luo, Scale Decoupled Distillation, CVPR 2024 (on KD)"
    flags = (KD_TEMPERATURE, SDD_MAX_SCALE, SDD_COMPLEMENTARY_WEIGHT)
    default_gamma = 0.1
    default_alpha = 0.0
    default_beta = 0.9

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.temperature = context.opt.kd_T

    def loss(self, features: Features) -> Tensor:
        student, teacher = self.cells(features)
        return sdd_kd_loss(student, teacher, features.labels, self.temperature, self.complementary_weight)
