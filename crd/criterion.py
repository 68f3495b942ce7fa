"""Contrastive representation distillation loss (Tian et al., 2020, "Contrastive Representation
Distillation", ICLR; NCE objective eqs. 17-19)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .memory import ContrastMemory, ContrastSampler

NCE_EPS = 1e-7


class Embed(nn.Module):
    """Flatten, linear map to dim_out, L2-normalise. Shapes: (B, ...) -> (B, dim_out)."""

    def __init__(self, dim_in: int = 1024, dim_out: int = 128) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x.reshape(x.shape[0], -1)), dim=1)


class ContrastLoss(nn.Module):
    """NCE loss with a uniform noise distribution P_n = 1 / n_data and m = K noise samples.

    -(sum_b log(P_pos / (P_pos + m P_n + eps)) + sum_{b,j} log(m P_n / (P_neg + m P_n + eps))) / B.
    Shapes: x (B, K+1) (or (B, K+1, 1)) normalised scores, positive first -> scalar.
    """

    def __init__(self, n_data: int) -> None:
        super().__init__()
        self.n_data = n_data

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        batch_size, num_noise = x.shape[0], x.shape[1] - 1
        noise_mass = num_noise / float(self.n_data)
        positive, negatives = x[:, 0], x[:, 1:]
        log_d1 = torch.log(positive / (positive + noise_mass + NCE_EPS))
        log_d0 = torch.log(noise_mass / (negatives + noise_mass + NCE_EPS))
        return -(log_d1.sum() + log_d0.sum()) / batch_size


class CRDLoss(nn.Module):
    """Student-anchored plus teacher-anchored NCE contrast against momentum memory banks.

    opt needs s_dim, t_dim, feat_dim, n_data, nce_k, nce_t, nce_m (crd_bank_dtype optional, default
    'fp32'). forward(f_s (B, s_dim),
    f_t (B, t_dim), idx (B,) dataset indices, contrast_idx (B, nce_k+1) or None) -> scalar.
    With contrast_idx None the indices come from `sampler` when one is attached (a
    ContrastSampler, drawing on the device), else uniformly over the dataset, positive first.
    ``defer_update``: the memory banks' momentum update waits for ``apply_memory_update()`` (after the
    optimizer step), which spares a copy of both banks per step (ContrastMemory).
    """

    def __init__(self, opt: Any, defer_update: bool = False) -> None:
        super().__init__()
        self.embed_s = Embed(opt.s_dim, opt.feat_dim)
        self.embed_t = Embed(opt.t_dim, opt.feat_dim)
        self.contrast = ContrastMemory(opt.feat_dim, opt.n_data, opt.nce_k, opt.nce_t, opt.nce_m,
                                       bank_dtype=getattr(opt, "crd_bank_dtype", "fp32"), defer_update=defer_update)
        self.criterion_s = ContrastLoss(opt.n_data)
        self.criterion_t = ContrastLoss(opt.n_data)
        self.sampler: ContrastSampler | None = None
        self.generator: torch.Generator | None = None

    def forward(
        self,
        f_s: torch.Tensor,
        f_t: torch.Tensor,
        idx: torch.Tensor,
        contrast_idx: torch.Tensor | None = None,
    ) -> torch.Tensor:
        student = self.embed_s(f_s)
        teacher = self.embed_t(f_t)
        if contrast_idx is None:
            if self.sampler is not None:
                contrast_idx = self.sampler(idx, generator=self.generator)
            else:
                contrast_idx = self.contrast.draw_uniform(idx, generator=self.generator)
        out_s, out_t = self.contrast(student, teacher, idx, contrast_idx)
        return self.criterion_s(out_s) + self.criterion_t(out_t)

    def apply_memory_update(self) -> None:
        """The deferred momentum update of the memory banks (see ``defer_update``)."""
        self.contrast.apply_pending_update()
