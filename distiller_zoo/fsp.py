"""FSP: Yim et al., "A Gift from Knowledge Distillation: Fast Optimization, Network Minimization
and Transfer Learning", CVPR 2017 (eqs. 1-2)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torch import Tensor

from distiller_zoo.base import INIT_EPOCHS, DistillContext, Distiller, Features, register
from helper.errors import UserError
from models.util import pool_to_smaller

__all__ = ["FSP"]


class FSP(nn.Module):
    """Per consecutive pair of maps, mean((G_s - G_t)^2) of the FSP (Gram) matrices.

    G(f1, f2) = f1 (B, C1, HW) @ f2^T (B, HW, C2) / HW after pooling the larger map to the
    smaller spatial size. Shapes: g_s, g_t lists of (B, C_i, H_i, W_i) -> list of scalars.
    s_shapes / t_shapes: the feature shapes (only the channel dim, index 1, is used); channels
    must match stage by stage.
    """

    def __init__(self, s_shapes: Sequence[Sequence[int]], t_shapes: Sequence[Sequence[int]]) -> None:
        super().__init__()
        if len(s_shapes) != len(t_shapes):
            raise ValueError(
                f"fsp: student has {len(s_shapes)} feature maps but teacher has {len(t_shapes)}"
            )
        for layer, (s_shape, t_shape) in enumerate(zip(s_shapes, t_shapes)):
            if s_shape[1] != t_shape[1]:
                raise ValueError(
                    f"fsp: feature {layer} has {s_shape[1]} student channels but {t_shape[1]} "
                    "teacher channels; fsp requires teacher and student with equal channels "
                    "per stage, e.g. resnet56->resnet20"
                )

    def forward(
        self, g_s: list[torch.Tensor], g_t: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        student_matrices = self.compute_fsp(g_s)
        teacher_matrices = self.compute_fsp(g_t)
        return [(s - t).pow(2).mean() for s, t in zip(student_matrices, teacher_matrices)]

    @staticmethod
    def compute_fsp(g: list[torch.Tensor]) -> list[torch.Tensor]:
        """FSP matrices (B, C_i, C_{i+1}) of each consecutive pair of maps."""
        matrices = []
        for bottom, top in zip(g[:-1], g[1:]):
            bottom, top = pool_to_smaller(bottom, top)
            batch_size, spatial = bottom.shape[0], bottom.shape[2] * bottom.shape[3]
            bottom_flat = bottom.reshape(batch_size, bottom.shape[1], spatial)
            top_flat = top.reshape(batch_size, top.shape[1], spatial)
            matrices.append(torch.bmm(bottom_flat, top_flat.transpose(1, 2)) / spatial)
        return matrices


@register
class FlowOfSolution(Distiller):
    """Init stage: student feature modules match the teacher's FSP matrices (feats[:-1]);
    main stage: CE (+KD) only."""

    display_name = "FSP"
    paper = "Yim et al., A Gift from Knowledge Distillation: Fast Optimization, Network Minimization and Transfer Learning, CVPR 2017"
    flags = (INIT_EPOCHS,)
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
