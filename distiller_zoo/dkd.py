"""DKD: Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge Distillation", CVPR 2022.

KD's KL divergence splits into a target-class term (TCKD: binary target / non-target
probabilities) and a non-target term (NCKD: the distribution among the non-target classes) whose
weight in KD is the teacher's non-target mass (1 - p_t). DKD weights the two freely
(alpha * TCKD + beta * NCKD) and ramps the loss in linearly over the first --dkd_warmup epochs,
as the official mdistiller code does."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distiller_zoo.base import LOGIT_STAND, DistillContext, Distiller, Features, Flag, register, warmup_factor
from distiller_zoo.kd import normalize

__all__ = ["dkd_loss", "dkd_per_sample"]

# Subtracted from the target class's scaled logit so that it vanishes from the NCKD softmax
# (the official constant; exp(-1000) underflows to exactly 0 in float32 and float64).
TARGET_LOGIT_OFFSET = 1000.0


def _binary_target_probabilities(probabilities: Tensor, target_mask: Tensor) -> Tensor:
    """(B, C) probabilities -> (B, 2): [target class, sum of the other classes]."""
    target = (probabilities * target_mask).sum(dim=1, keepdim=True)
    others = (probabilities * ~target_mask).sum(dim=1, keepdim=True)
    return torch.cat([target, others], dim=1)


def dkd_per_sample(logits_student: Tensor, logits_teacher: Tensor, target: Tensor, alpha: float, beta: float,
                   temperature: float) -> Tensor:
    """alpha * TCKD + beta * NCKD of each sample, each T^2 * KL(teacher || student).

    TCKD compares the binary [p_target, 1 - p_target] distributions at temperature T; NCKD the
    softmax over the non-target classes (target logit pushed down by 1000). Per sample,
    KD = TCKD + (1 - p_target^teacher) * NCKD (paper eq. 7). Shapes: logits (B, C), target (B,) -> (B,).
    """
    target_mask = torch.zeros_like(logits_student, dtype=torch.bool).scatter_(1, target.reshape(-1, 1), True)
    binary_student = _binary_target_probabilities(F.softmax(logits_student / temperature, dim=1), target_mask)
    binary_teacher = _binary_target_probabilities(F.softmax(logits_teacher / temperature, dim=1), target_mask)
    tckd = F.kl_div(torch.log(binary_student), binary_teacher, reduction="none").sum(1)
    offset = TARGET_LOGIT_OFFSET * target_mask
    non_target_teacher = F.softmax(logits_teacher / temperature - offset, dim=1)
    non_target_log_student = F.log_softmax(logits_student / temperature - offset, dim=1)
    nckd = F.kl_div(non_target_log_student, non_target_teacher, reduction="none").sum(1)
    return (alpha * tckd + beta * nckd) * temperature**2


def dkd_loss(logits_student: Tensor, logits_teacher: Tensor, target: Tensor, alpha: float, beta: float,
             temperature: float) -> Tensor:
    """``dkd_per_sample`` averaged over the batch (the official dkd_loss). Shapes: (B, C), (B, C), (B,) -> scalar."""
    return dkd_per_sample(logits_student, logits_teacher, target, alpha, beta, temperature).mean()


@register
class DecoupledKD(Distiller):
    """warm-up(epoch) * dkd_loss(student, teacher, labels, --dkd_alpha, --dkd_beta, --dkd_T);
    with --logit_stand both logits are z-scored first (Sun et al., CVPR 2024)."""

    display_name = "DKD"
    paper = "Zhao et al., Decoupled Knowledge Distillation, CVPR 2022"
    teacher_reads = "logits"  # a teacher bank can stand in for the teacher
    warmup_flag = "--dkd_warmup"
    flags = (Flag("--dkd_alpha", 1.0, "DKD weight of the target-class term TCKD", minimum=0),
             Flag("--dkd_beta", 8.0, "DKD weight of the non-target-class term NCKD (tuned per pair: "
                  "--recipe dkd-cifar100/<teacher>-<student>/dkd sets the published value)", minimum=0),
             Flag("--dkd_T", 4.0, "DKD temperature", above=0),
             Flag("--dkd_warmup", 20, "DKD loss weight ramps linearly to 1 over this many epochs (0: none)",
                  minimum=0),
             LOGIT_STAND)
    default_gamma = 1.0
    default_alpha = 0.0
    default_beta = 1.0
    uses_features = False

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        opt = context.opt
        self.alpha, self.beta, self.temperature = opt.dkd_alpha, opt.dkd_beta, opt.dkd_T
        self.warmup_epochs = opt.dkd_warmup
        self.logit_stand = bool(getattr(opt, "logit_stand", False))

    def loss(self, features: Features) -> Tensor:
        student, teacher = features.student_logits, features.teacher_logits
        if self.logit_stand:
            student, teacher = normalize(student), normalize(teacher)
        weight = warmup_factor(features.progress.epoch, self.warmup_epochs)
        return weight * dkd_loss(student, teacher, features.labels, self.alpha, self.beta, self.temperature)
