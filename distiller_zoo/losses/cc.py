"""Correlation congruence (Peng et al., 2019, "Correlation Congruence for Knowledge Distillation").

RepDistiller's simplified form on embedded features (the method supplies the linear embeds).
"""
from __future__ import annotations

import torch
import torch.nn as nn


class Correlation(nn.Module):
    """mean over i of sum_k d[i,k] * d[i+1,k], with d = |f_s - f_t| and i = 0..B-2.

    Shapes: f_s, f_t (B, D) embeddings -> scalar.
    """

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        delta = (f_s - f_t).abs()
        return (delta[:-1] * delta[1:]).sum(1).mean()
