"""DIST: Huang, You, Wang, Qian & Xu, "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022.

Instead of matching the teacher's probabilities exactly (KL), match their relations: the Pearson
correlation between student and teacher probabilities of each sample across the classes
(inter-class relation) and of each class across the batch (intra-class relation). Both are
computed on softmax(z / tau) and scaled by tau^2, as the official code (hunto/DIST_KD, loss in
hunto/image_classification_sota lib/models/losses/dist_kd.py) does."""
from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from distiller_zoo.base import DistillContext, Distiller, Features, Flag, register

__all__ = ["DIST", "inter_class_relation", "intra_class_relation"]


def _cosine_similarity(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Row-wise <a, b> / (|a| |b| + eps). Shapes: (N, D), (N, D) -> (N,)."""
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def _pearson_correlation(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Row-wise Pearson correlation (cosine similarity of the row-centred vectors). (N, D) -> (N,)."""
    return _cosine_similarity(a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True), eps)


def inter_class_relation(y_s: Tensor, y_t: Tensor) -> Tensor:
    """1 - mean over samples of the Pearson correlation across classes. (B, C), (B, C) -> scalar."""
    return 1 - _pearson_correlation(y_s, y_t).mean()


def intra_class_relation(y_s: Tensor, y_t: Tensor) -> Tensor:
    """1 - mean over classes of the Pearson correlation across the batch. (B, C), (B, C) -> scalar."""
    return inter_class_relation(y_s.transpose(0, 1), y_t.transpose(0, 1))


class DIST(nn.Module):
    """tau^2 * (beta * inter_class_relation + gamma * intra_class_relation) of softmax(z / tau).

    Shapes: z_s, z_t (B, C) logits -> scalar. The intra-class term correlates over the batch, so
    under torchrun it uses each process's own batch (as the official DDP training does).
    """

    def __init__(self, beta: float = 1.0, gamma: float = 1.0, tau: float = 1.0) -> None:
        super().__init__()
        self.beta = beta
        self.gamma = gamma
        self.tau = tau

    def forward(self, z_s: Tensor, z_t: Tensor) -> Tensor:
        y_s = (z_s / self.tau).softmax(dim=1)
        y_t = (z_t / self.tau).softmax(dim=1)
        inter_loss = self.tau**2 * inter_class_relation(y_s, y_t)
        intra_loss = self.tau**2 * intra_class_relation(y_s, y_t)
        return self.beta * inter_loss + self.gamma * intra_loss


@register
class StrongerTeacher(Distiller):
    """DIST(--dist_beta, --dist_gamma, --dist_tau) on the logits; CIFAR-100 defaults of the official
    config (configs/strategies/distill/dist_cifar.yaml: kd dist_t4, ori_loss_weight 1, kd_loss_weight 2)."""

    display_name = "DIST"
    paper = "Huang et al., Knowledge Distillation from A Stronger Teacher, NeurIPS 2022"
    teacher_reads = "logits"  # a teacher bank can stand in for the teacher
    flags = (Flag("--dist_beta", 1.0, "DIST weight of the inter-class relation (per sample, across classes)",
                  minimum=0),
             Flag("--dist_gamma", 1.0, "DIST weight of the intra-class relation (per class, across the batch)",
                  minimum=0),
             Flag("--dist_tau", 4.0, "DIST temperature (official CIFAR-100: 4; ImageNet: 1)", above=0))
    default_gamma = 1.0
    default_alpha = 0.0
    default_beta = 2.0
    uses_features = False

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        opt = context.opt
        self.criterion = DIST(opt.dist_beta, opt.dist_gamma, opt.dist_tau)

    def loss(self, features: Features) -> Tensor:
        return self.criterion(features.student_logits, features.teacher_logits)
