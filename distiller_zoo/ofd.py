"""OFD: Heo, Kim, Yun, Park, Kwak & Choi, "A Comprehensive Overhaul of Feature Distillation", ICCV 2019.

Each stage's pre-ReLU output is distilled (the feature position before the ReLU keeps the
negative values the teacher's ReLU would discard). The teacher side goes through a margin ReLU,
max(t, m_c): m_c = E[x | x < 0] for the channel's pre-ReLU distribution, taken as the Gaussian
N(beta_c, gamma_c^2) of the BatchNorm before that ReLU (paper eq. 2-3, ``get_margin_from_BN``).
The student side goes through a connector (1x1 conv + BN to the teacher's channels). The partial
L2 distance skips positions where the student is already below a negative target (paper eq. 4):
sum over (s - max(t, m))^2 where s > max(t, m) or t > 0. Stage i of n is weighted 1 / 2^(n-1-i),
and the sum is divided by the batch size; the official CIFAR-100 code then divides by 1000,
which is ``-b 0.001`` here (mdistiller's OFD FEAT_WEIGHT).

As in mdistiller's port, the stages are those of the pair's architectures (the last ones when
the two networks have a different number) and the teacher's map is average-pooled to the student's
size where they differ. As in both official implementations, the frozen teacher runs in train mode
while distilling (``teacher_mode = "train"``): the authors' CIFAR-100 and ImageNet scripts call
``t_net.train()`` each epoch, and mdistiller's ``OFD.train()`` overrides its base class's, which
would put the teacher in eval mode. Each pre-ReLU map is thus normalised with the batch's own
statistics, so that it has the per-channel mean beta_c and std |gamma_c| that the margin formula
assumes. The teacher gets no gradients and is validated in eval mode. The margins are computed
once from the teacher's BatchNorm weights when the method is built.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distiller_zoo.base import DistillContext, Distiller, Features, register
from helper.errors import UserError

__all__ = ["OFDLoss", "distillation_loss", "get_margin_from_BN", "build_feature_connector"]

# Below this probability of a negative pre-ReLU value, the margin is taken as -3 std (official).
NEGATIVE_MASS_FLOOR = 1e-3


def get_margin_from_BN(bn: nn.BatchNorm2d) -> Tensor:
    """Per-channel margin E[x | x < 0] for x ~ N(beta, |gamma|^2) of the BatchNorm ``bn``.

    m = beta - |gamma| * phi(beta/|gamma|) / Phi(-beta/|gamma|) (the mean of the truncated Gaussian),
    or -3 |gamma| where Phi(-beta/|gamma|) <= 0.001. Computed in float64. Shape: (C,)."""
    std = bn.weight.detach().double().abs()
    mean = bn.bias.detach().double()
    negative_mass = torch.special.ndtr(-mean / std)
    density = torch.exp(-((mean / std) ** 2) / 2) / math.sqrt(2 * math.pi)
    truncated_mean = -std * density / negative_mass + mean
    margin = torch.where(negative_mass > NEGATIVE_MASS_FLOOR, truncated_mean, -3 * std)
    return margin.float()


def distillation_loss(source: Tensor, target: Tensor, margin: Tensor) -> Tensor:
    """Partial L2 between the student's connector output and the teacher's margin-ReLU output:
    sum of (s - max(t, m))^2 over the positions where s > max(t, m) or max(t, m) > 0.

    Shapes: source, target (B, C, H, W), margin broadcastable (1, C, 1, 1) -> scalar (a sum)."""
    target = torch.max(target, margin)
    squared = (source - target).pow(2)
    return (squared * ((source > target) | (target > 0)).to(squared.dtype)).sum()


def build_feature_connector(teacher_channels: int, student_channels: int) -> nn.Sequential:
    """1x1 conv (no bias) + BN, the conv initialised N(0, 2 / (k*k*out)) as in the official code."""
    conv = nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False)
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / teacher_channels))
    return nn.Sequential(conv, nn.BatchNorm2d(teacher_channels))


class OFDLoss(nn.Module):
    """sum_i distillation_loss(connector_i(s_i), pool(t_i), margin_i) / 2^(n-1-i) / B.

    ``margins``: one (C_i,) tensor per stage (``get_margin_from_BN``); the connectors map the
    student's channels to the teacher's. Shapes: lists of (B, C, H, W) maps, shallow to deep."""

    def __init__(self, student_channels: list[int], teacher_channels: list[int], margins: list[Tensor]) -> None:
        super().__init__()
        self.connectors = nn.ModuleList(build_feature_connector(t, s)
                                        for s, t in zip(student_channels, teacher_channels))
        for index, margin in enumerate(margins):
            self.register_buffer(f"margin{index + 1}", margin.reshape(1, -1, 1, 1).clone())

    def forward(self, student_feats: list[Tensor], teacher_feats: list[Tensor]) -> Tensor:
        count = len(self.connectors)
        total = student_feats[0].new_zeros(())
        for index, (connector, student, teacher) in enumerate(zip(self.connectors, student_feats, teacher_feats)):
            source = connector(student)
            if teacher.shape[-2:] != source.shape[-2:]:
                teacher = F.adaptive_avg_pool2d(teacher, source.shape[-2:])
            margin = getattr(self, f"margin{index + 1}")
            total = total + distillation_loss(source, teacher.detach(), margin) / 2 ** (count - 1 - index)
        return total / student_feats[0].shape[0]


def _teacher_margins(context: DistillContext) -> list[Tensor]:
    """The margins of the stages distilled: the last min(student stages, teacher stages) of both.
    The teacher's ``get_bn_before_relu()`` must give one BatchNorm per stage, of the stage's width."""
    count = min(len(context.student_shapes), len(context.teacher_shapes)) - 2
    widths = [int(shape[1]) for shape in context.teacher_shapes[-1 - count:-1]]
    get_bns = getattr(context.teacher, "get_bn_before_relu", None)
    bns = get_bns()[-count:] if get_bns is not None else []
    if [getattr(bn, "num_features", None) for bn in bns] != widths:
        raise UserError(f"OFD takes its margins from the teacher's BatchNorm before each stage's ReLU, but "
                        f"{type(context.teacher).__name__}.get_bn_before_relu() does not give one BatchNorm of "
                        f"{widths} channels per stage. Use another teacher architecture (resnet*, wrn_*, vgg*, "
                        "ResNet50, MobileNetV2 and ShuffleV1 qualify).")
    return [get_margin_from_BN(bn) for bn in bns]


@register
class OverhaulFeatureDistillation(Distiller):
    """OFDLoss between the student's and the teacher's pre-ReLU stage outputs (CE weight 1, loss
    weight 1/1000 as the official CIFAR-100 code)."""

    display_name = "OFD"
    paper = "Heo et al., A Comprehensive Overhaul of Feature Distillation, ICCV 2019"
    default_gamma = 1.0
    default_alpha = 0.0
    default_beta = 1e-3
    uses_preact = True
    teacher_mode = "train"  # the official code's t_net.train(): BatchNorm with the batch's statistics

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        margins = _teacher_margins(context)
        self.stages = slice(-1 - len(margins), -1)  # the last stage outputs (feats end with the pooled vector)
        student_channels = [int(shape[1]) for shape in context.student_shapes[self.stages]]
        teacher_channels = [int(shape[1]) for shape in context.teacher_shapes[self.stages]]
        self.criterion = OFDLoss(student_channels, teacher_channels, margins)

    def loss(self, features: Features) -> Tensor:
        return self.criterion(features.student[self.stages], features.teacher[self.stages])
