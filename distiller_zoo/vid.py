"""VID: Ahn et al., "Variational Information Distillation for Knowledge Transfer", CVPR 2019
(eq. 2 with a heteroscedastic Gaussian, one variance per channel)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distiller_zoo.base import DistillContext, Distiller, Features, register
from models.util import pool_to_smaller

__all__ = ["VIDLoss"]


def _conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, padding=0, bias=False)


class VIDLoss(nn.Module):
    """Gaussian negative log-likelihood of the teacher map under a regressed student mean.

    loss = mean(0.5 * ((mu - t)^2 / var + log var)), mu = regressor(s) (three 1x1 convs, no bias,
    ReLU between), var = softplus(log_scale) + eps per target channel, initialised to
    init_pred_var. Shapes: input (B, C_in, H, W), target (B, C_target, H', W') -> scalar; the
    larger map is pooled to the smaller spatial size.
    """

    def __init__(
        self,
        num_input_channels: int,
        num_mid_channel: int,
        num_target_channels: int,
        init_pred_var: float = 5.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.regressor = nn.Sequential(
            _conv1x1(num_input_channels, num_mid_channel),
            nn.ReLU(),
            _conv1x1(num_mid_channel, num_mid_channel),
            nn.ReLU(),
            _conv1x1(num_mid_channel, num_target_channels),
        )
        # inverse softplus, so that softplus(log_scale) + eps == init_pred_var at start
        initial_log_scale = math.log(math.expm1(init_pred_var - eps))
        self.log_scale = nn.Parameter(torch.full((num_target_channels,), initial_log_scale))
        self.eps = eps

    def predicted_variance(self) -> torch.Tensor:
        """Per-channel variance, shape (C_target,)."""
        return F.softplus(self.log_scale) + self.eps

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        input, target = pool_to_smaller(input, target)
        predicted_mean = self.regressor(input)
        variance = self.predicted_variance().view(1, -1, 1, 1)
        neg_log_prob = 0.5 * ((predicted_mean - target).pow(2) / variance + variance.log())
        return neg_log_prob.mean()


@register
class VariationalInformation(Distiller):
    """Gaussian likelihood of each teacher stage map under a regressor of the student's, summed."""

    display_name = "VID"
    paper = "Ahn et al., Variational Information Distillation for Knowledge Transfer, CVPR 2019"
    default_beta = 1.0

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        pairs = zip(context.student_shapes[1:-1], context.teacher_shapes[1:-1])
        self.criteria = nn.ModuleList(VIDLoss(s[1], t[1], t[1]) for s, t in pairs)

    def loss(self, features: Features) -> Tensor:
        return sum(criterion(s, t) for criterion, s, t in
                   zip(self.criteria, features.student[1:-1], features.teacher[1:-1]))
