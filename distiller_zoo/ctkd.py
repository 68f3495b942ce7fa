"""CTKD: Li et al., "Curriculum Temperature for Knowledge Distillation", AAAI 2023.

KD whose temperature is learned adversarially: one global parameter theta gives
T = t_start + t_end * sigmoid(theta), and reaches theta through a gradient-reversal layer, so the
optimizer step that lowers the KD loss for the student raises it w.r.t. the temperature. The
reversal strength lambda follows a cosine curriculum over the first epochs (easy to hard), as the
official code (zhengli97/CTKD, global temperature, vanilla-KD setting) does. With --logit_stand
both logits are z-scored before the division by T (Sun et al., CVPR 2024, its CTKD variant).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from distiller_zoo.base import LOGIT_STAND, DistillContext, Distiller, Features, Flag, register
from distiller_zoo.kd import kd_loss
from helper.errors import UserError

__all__ = ["GradientReversalFunction", "GradientReversal", "Global_T", "curriculum_lambda"]


class GradientReversalFunction(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by -lambda_ (Ganin & Lempitsky, 2015)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, lambda_: float) -> Tensor:
        ctx.lambda_ = float(lambda_)
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        return -ctx.lambda_ * grad_output, None


class GradientReversal(nn.Module):
    """Module form of ``GradientReversalFunction``: y = x, dL/dx = -lambda_ * dL/dy."""

    def forward(self, x: Tensor, lambda_: float) -> Tensor:
        return GradientReversalFunction.apply(x, lambda_)


class Global_T(nn.Module):  # noqa: N801 - the official module name
    """The learnable global temperature parameter (shape (1,), initialised to 1 as officially),
    returned through the gradient-reversal layer; the caller maps it into [t_start, t_start + t_end]."""

    def __init__(self) -> None:
        super().__init__()
        self.global_T = nn.Parameter(torch.ones(1))
        self.grl = GradientReversal()

    def forward(self, lambda_: float) -> Tensor:
        return self.grl(self.global_T, lambda_)


def curriculum_lambda(epoch: float, lambda_min: float, lambda_max: float, epochs: int) -> float:
    """Reversal strength at ``epoch`` (1-based, as the official loop passes it): from ``lambda_min``
    at epoch 0 up to ``lambda_max`` at ``epochs`` along half a cosine, constant afterwards (paper
    eq. 8)::

        lambda(e) = lambda_min + (lambda_max - lambda_min) * (1 - cos(pi * clip(e, 0, epochs) / epochs)) / 2

    The official code computes the same curve with the sign folded in: its ``CosineDecay`` runs
    from --decay_max 0 to --decay_min -1 over --decay_loops 10 epochs and its reversal layer
    multiplies the gradient by that (negative) value.
    """
    if epochs <= 0:
        return lambda_max
    done = min(max(epoch, 0), epochs) / epochs
    return lambda_min + (lambda_max - lambda_min) * (1.0 - math.cos(math.pi * done)) / 2.0


@register
class CurriculumTemperature(Distiller):
    """KD at a learned global temperature (reversed gradient, cosine curriculum of its strength).

    Loss = T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) (batch mean), z z-scored with --logit_stand.
    The temperature module is trained by the student's optimizer (same learning rate, momentum and
    weight decay), as in the official code, which appends it to the trainable modules.
    """

    display_name = "CTKD"
    paper = "Li et al., Curriculum Temperature for Knowledge Distillation, AAAI 2023"
    teacher_reads = "logits"  # a teacher bank can stand in for the teacher
    flags = (Flag("--t_start", 1.0, "CTKD: lowest temperature; T = t_start + t_end * sigmoid(theta)", minimum=0),
             Flag("--t_end", 20.0, "CTKD: temperature range above --t_start", above=0),
             Flag("--lambda_min", 0.0, "CTKD: gradient-reversal strength at the start of the curriculum",
                  minimum=0),
             Flag("--lambda_max", 1.0, "CTKD: gradient-reversal strength once the curriculum is done", minimum=0),
             Flag("--lambda_epochs", 10, "CTKD: epochs of the cosine curriculum of the reversal strength "
                  "(official --decay_loops)", minimum=0),
             LOGIT_STAND)
    # Official CIFAR-100 command (scripts/run_cifar_distill.sh): -r 0.1 -a 0.9 with the KD term at the
    # learned temperature; here that term is the method loss (-b) and the fixed-temperature KD is off.
    default_gamma = 0.1
    default_alpha = 0.0
    default_beta = 0.9
    uses_features = False

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        opt = context.opt
        if opt.lambda_min > opt.lambda_max:
            raise UserError(f"--lambda_min {opt.lambda_min} is above --lambda_max {opt.lambda_max}: the CTKD "
                            "curriculum raises the reversal strength from --lambda_min to --lambda_max "
                            "(defaults 0 and 1).")
        self.t_start, self.t_end, self.logit_stand = opt.t_start, opt.t_end, opt.logit_stand
        self.lambda_range = (opt.lambda_min, opt.lambda_max, opt.lambda_epochs)
        self.temperature_module = Global_T()

    def temperature(self, lambda_: float = 0.0) -> Tensor:
        """T = t_start + t_end * sigmoid(theta), a 0-dim tensor (theta behind the reversal layer)."""
        theta = self.temperature_module(lambda_)
        return (self.t_start + self.t_end * torch.sigmoid(theta)).reshape(())

    def loss(self, features: Features) -> Tensor:
        temperature = self.temperature(curriculum_lambda(features.progress.epoch, *self.lambda_range))
        return kd_loss(features.student_logits, features.teacher_logits, temperature, self.logit_stand)

    def epoch_scalars(self) -> dict[str, float]:
        with torch.no_grad():
            return {"temperature": float(self.temperature())}
