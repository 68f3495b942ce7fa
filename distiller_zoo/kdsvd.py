"""KDSVD: Lee et al., "Self-supervised Knowledge Distillation Using Singular Value Decomposition", ECCV 2018.

Each stage map (B, C, H, W) is read as B matrices of shape (H*W, C) and decomposed by SVD; the
leading right singular vectors (C-dim, one per kept singular value) summarise which channel
combinations the map uses. Between every two consecutive stages, a radial basis kernel
exp(-(v_i[c] - v_{i-1}[c'])^2 / 8) relates the channels of one stage to those of the previous
one; the student learns to reproduce the teacher's kernel (squared error, summed, mean over the
batch). The student keeps k + 3 singular vectors and, for each teacher vector, uses the one most
aligned with it (sign flipped to agree), so the loss does not depend on the student's SVD signs.
As in RepDistiller's ``KDSVD``, it applies to the stage outputs feats[1:-1] and the per-pair
losses are summed.

The forward values are RepDistiller's. The SVD's backward is PyTorch's formula except that its 0/0
terms, which come from equal (typically zero, e.g. dead ReLU channels) singular values whose vectors
the loss does not use, are 0 instead of NaN; PyTorch's own backward turns such a batch's
gradient into NaN.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distiller_zoo.base import DistillContext, Distiller, Features, register
from helper.errors import UserError

__all__ = ["KDSVD"]


def _divide_or_zero(numerator: Tensor, denominator: Tensor) -> Tensor:
    """numerator / denominator, 0 where the denominator is 0."""
    zero = denominator == 0
    return torch.where(zero, torch.zeros_like(numerator), numerator / torch.where(zero, 1.0, denominator))


class _ThinSVD(torch.autograd.Function):
    """(U, S, V) of torch.linalg.svd(A, full_matrices=False) with V = Vh^T; see the module docstring
    for how the backward differs from PyTorch's. Shapes: A (B, m, n) -> (B, m, q), (B, q), (B, n, q)."""

    @staticmethod
    def forward(ctx, matrix: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        left, singular, right_transposed = torch.linalg.svd(matrix, full_matrices=False)
        right = right_transposed.transpose(-2, -1)
        ctx.save_for_backward(left, singular, right)
        return left, singular, right

    @staticmethod
    def backward(ctx, grad_left: Tensor, grad_singular: Tensor, grad_right: Tensor) -> Tensor:
        left, singular, right = ctx.saved_tensors
        squared = singular * singular
        gaps = squared.unsqueeze(-2) - squared.unsqueeze(-1)                  # s_j^2 - s_i^2
        gaps.diagonal(dim1=-2, dim2=-1).fill_(1)
        left_term = left.transpose(-2, -1) @ grad_left
        right_term = right.transpose(-2, -1) @ grad_right
        left_term = left_term - left_term.transpose(-2, -1)
        right_term = right_term - right_term.transpose(-2, -1)
        inner = _divide_or_zero(left_term * singular.unsqueeze(-2) + singular.unsqueeze(-1) * right_term, gaps)
        grad = left @ (inner + torch.diag_embed(grad_singular)) @ right.transpose(-2, -1)
        rows, columns, rank = left.shape[-2], right.shape[-2], singular.shape[-1]
        if rows > rank:  # the part of grad_left outside span(U)
            scaled = _divide_or_zero(grad_left, singular.unsqueeze(-2))
            scaled = scaled - left @ (left.transpose(-2, -1) @ scaled)
            grad = grad + scaled @ right.transpose(-2, -1)
        if columns > rank:  # the part of grad_right outside span(V)
            scaled = _divide_or_zero(grad_right, singular.unsqueeze(-2))
            scaled = scaled - right @ (right.transpose(-2, -1) @ scaled)
            grad = grad + left @ scaled.transpose(-2, -1)
        return grad


class KDSVD(nn.Module):
    """Radial-basis-kernel matching of truncated right singular vectors of consecutive maps.

    Shapes: g_s, g_t lists of (B, C_i, H_i, W_i) maps, student and teacher of each pair with equal
    channel counts C_i (spatial sizes may differ) -> list of len(g_s) - 1 scalars, one per pair of
    consecutive maps. The teacher keeps ``k`` singular vectors, the student ``k + 3``.
    """

    def __init__(self, k: int = 1) -> None:
        super().__init__()
        self.k = k

    def forward(self, g_s: list[Tensor], g_t: list[Tensor]) -> list[Tensor]:
        losses = []
        previous_student = previous_teacher = None
        for f_s, f_t in zip(g_s, g_t):
            _, singular_teacher, vectors_teacher = self.svd(f_t, self.k)
            _, _, vectors_student = self.svd(f_s, self.k + 3)
            vectors_student, vectors_teacher = self.align_rsv(vectors_student, vectors_teacher)
            singular_teacher = singular_teacher.unsqueeze(1)          # (B, 1, k)
            vectors_teacher = vectors_teacher * singular_teacher     # (B, C, k)
            vectors_student = vectors_student * singular_teacher
            if previous_student is not None:
                kernel_student = self.radial_basis(vectors_student, previous_student)
                kernel_teacher = self.radial_basis(vectors_teacher, previous_teacher)
                squared = (kernel_student - kernel_teacher.detach()).pow(2)
                squared = torch.where(torch.isfinite(squared), squared, torch.zeros_like(squared))
                losses.append(squared.sum())
            previous_student, previous_teacher = vectors_student, vectors_teacher
        batch_size = g_s[0].shape[0]
        return [loss / batch_size for loss in losses]

    @staticmethod
    def radial_basis(current: Tensor, previous: Tensor) -> Tensor:
        """exp(-(current[c] - previous[c'])^2 / 8) per kept vector: (B, C, k), (B, C', k) -> (B, C, C', k)."""
        return torch.exp(-(current.unsqueeze(2) - previous.unsqueeze(1)).pow(2) / 8)

    def svd(self, feat: Tensor, n: int = 1) -> tuple[Tensor, Tensor, Tensor]:
        """SVD of the (H*W, C) matrix of each sample: U (B, H*W, n), S (B, n), V (B, C, n).

        Non-finite entries are zeroed; with ``n > 0`` the first n columns are kept and U and V are
        L2-normalised along their first axis, S along the n kept values."""
        if feat.dim() != 4:
            raise ValueError(f"KDSVD expects (B, C, H, W) maps, got shape {tuple(feat.shape)}")
        batch, channels, height, width = feat.shape
        matrix = feat.reshape(batch, channels, height * width).transpose(-2, -1)
        left, singular, right = _ThinSVD.apply(matrix)
        left, singular, right = self.removenan(left), self.removenan(singular), self.removenan(right)
        if n > 0:
            left = F.normalize(left[:, :, :n], dim=1)
            singular = F.normalize(singular[:, :n], dim=1)
            right = F.normalize(right[:, :, :n], dim=1)
        return left, singular, right

    @staticmethod
    def removenan(x: Tensor) -> Tensor:
        """``x`` with non-finite entries replaced by 0."""
        return torch.where(torch.isfinite(x), x, torch.zeros_like(x))

    @staticmethod
    def align_rsv(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        """For each column of ``b`` (B, C, k), the column of ``a`` (B, C, m) with the largest
        |cosine| to it, times the sign of that cosine: returns ((B, C, k), b)."""
        cosine = torch.matmul(a.transpose(-2, -1), b)                          # (B, m, k)
        max_abs_cosine, _ = torch.max(torch.abs(cosine), 1, keepdim=True)
        selection = torch.where(torch.eq(max_abs_cosine, torch.abs(cosine)), torch.sign(cosine),
                                torch.zeros_like(cosine))
        return torch.matmul(a, selection), b


@register
class KDSVDMethod(Distiller):
    """KDSVD on the stage outputs feats[1:-1], summed over the consecutive pairs.

    Default -b 1: RepDistiller ships no weight for it; mdistiller's KDSVD (cfg KDSVD.LOSS.FEAT_WEIGHT,
    configs/cifar100/kdsvd.yaml, resnet32x4->resnet8x4) weights it 1 beside CE 1. Measured on
    randomly initialised pairs (resnet32x4->resnet8x4, wrn_40_2->wrn_16_2, resnet56->resnet20,
    vgg13->vgg8; batch 64 of the test images), the summed loss is 0.09-0.97 against CE 4.6, and its
    gradient on the student 0.04-0.7 times CE's: at -b 1 it shapes training without dominating CE.
    """

    display_name = "KDSVD"
    paper = ("Lee, Kim & Song, Self-supervised Knowledge Distillation Using Singular Value Decomposition, "
             "ECCV 2018")
    default_beta = 1.0

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        student_maps, teacher_maps = context.student_shapes[1:-1], context.teacher_shapes[1:-1]
        mismatched = [(index + 1, tuple(s[1:]), tuple(t[1:]))
                      for index, (s, t) in enumerate(zip(student_maps, teacher_maps))
                      if len(s) != 4 or len(t) != 4 or s[1] != t[1]]
        if mismatched or len(student_maps) != len(teacher_maps):
            student, teacher = getattr(context.opt, "model_s", "student"), getattr(context.opt, "model_t", "teacher")
            pairs = "; ".join(f"feats[{i}] (C, H, W): {student} {s} vs {teacher} {t}" for i, s, t in mismatched) or (
                f"{student} has {len(student_maps)} stage maps, {teacher} {len(teacher_maps)}")
            raise UserError(f"--distill kdsvd compares the right singular vectors (one entry per channel) of "
                            f"each student stage map with those of the teacher's, so paired maps need equal "
                            f"channel counts (their sizes may differ) and the two networks the same number of "
                            f"stages ({pairs}). Use a student of the teacher's width (e.g. resnet32x4 -> resnet8x4, "
                            f"wrn_40_2 -> wrn_16_2, vgg13 -> vgg8), or a method with a connector such as "
                            f"--distill hint.")
        self.criterion = KDSVD(k=1)

    def loss(self, features: Features) -> Tensor:
        return sum(self.criterion(features.student[1:-1], features.teacher[1:-1]))
