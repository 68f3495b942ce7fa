"""DCD: Giakoumoglou & Stathaki, "Discriminative and Consistent Representation Distillation",
arXiv:2407.11802, 2024.

In-batch contrastive loss with a learnable temperature and bias plus a row/column consistency KL term."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distiller_zoo.base import FEAT_DIM, NCE_T, DistillContext, Distiller, Features, Flag, register
from helper import distributed

__all__ = ["DCDLoss"]


class DCDLoss(nn.Module):
    """CE(logits, diagonal) + alpha * KL(log_softmax(logits, 1) || softmax(logits, 0)^T, batchmean).

    logits = S T^T * exp(tau).clamp(max=max_tau) + b, with S, T the L2-normalised linear embeds
    (to opt.feat_dim) of student and teacher features and tau (init 1), b (init 0) learnable.
    opt needs s_dim, t_dim, feat_dim. Shapes: f_s (B, s_dim), f_t (B, t_dim) -> scalar.

    ``trainable=False`` is the reference's fixed-temperature ablation: logits = S T^T * opt.nce_t
    (tau holds opt.nce_t and multiplies as it is: no exp, no clamp) with b = 0; neither is trained.

    Under torchrun the contrast is in-batch, so it depends on what "the batch" is: by default each
    rank contrasts its own B samples (B x B logits, as a single process with batch B). With
    ``opt.dcd_gather`` (--dcd_gather) the embeddings of all ranks are gathered with autograd and
    every rank computes the loss over the global batch (NB x NB logits), which after gradient
    averaging equals single-process training with batch NB.
    """

    def __init__(
        self,
        opt: Any,
        max_tau: float = 10.0,
        alpha: float = 0.5,
        init_tau: float = 1.0,
        init_b: float = 0.0,
        trainable: bool = True,
    ) -> None:
        super().__init__()
        self.max_tau = max_tau
        self.alpha = alpha
        self.trainable = trainable
        if trainable:
            self.tau = nn.Parameter(torch.tensor(float(init_tau)))
            self.b = nn.Parameter(torch.tensor(float(init_b)))
        else:
            self.tau = nn.Parameter(torch.tensor(float(opt.nce_t)), requires_grad=False)
            self.b = nn.Parameter(torch.tensor(0.0), requires_grad=False)
        self.embed_s = nn.Linear(opt.s_dim, opt.feat_dim)
        self.embed_t = nn.Linear(opt.t_dim, opt.feat_dim)
        self.gather = bool(getattr(opt, "dcd_gather", False))

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        student = F.normalize(self.embed_s(f_s), dim=1)
        teacher = F.normalize(self.embed_t(f_t), dim=1)
        if self.gather:
            student, teacher = distributed.all_gather_with_grad(student), distributed.all_gather_with_grad(teacher)
        if self.trainable:
            logits = student @ teacher.t() * self.tau.exp().clamp(max=self.max_tau) + self.b
        else:
            logits = student @ teacher.t() * self.tau
        targets = torch.arange(logits.shape[0], device=logits.device)
        contrastive = F.cross_entropy(logits, targets)
        consistency = F.kl_div(
            F.log_softmax(logits, dim=1), F.softmax(logits, dim=0).t(), reduction="batchmean"
        )
        return contrastive + self.alpha * consistency


@register
class DiscriminativeConsistent(Distiller):
    """In-batch contrastive CE over student-teacher embedding similarities with learnable
    temperature and bias, plus a KL consistency term (tau and b are trained; fixed with --dcd_fixed_tau)."""

    display_name = "DCD"
    paper = "Giakoumoglou & Stathaki, Discriminative and Consistent Representation Distillation, arXiv 2024"
    teacher_reads = "embedding"  # a teacher bank can stand in for the teacher
    flags = (FEAT_DIM, NCE_T,
             Flag("--dcd_fixed_tau", False, "DCD without learned temperature and bias (the reference's "
                  "DCDLoss(trainable=False) ablation): logits = cosine x --nce_t, b = 0"),
             Flag("--dcd_gather", False, "torchrun: DCD contrasts over the global batch (all processes) instead of "
                  "each process's"))
    aliases = ("icd",)
    sweep_with_kd = True
    default_beta = 1.0

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.criterion = DCDLoss(context.loss_options(), trainable=not getattr(context.opt, "dcd_fixed_tau", False))

    def loss(self, features: Features) -> Tensor:
        return self.criterion(features.student[-1], features.teacher[-1])
