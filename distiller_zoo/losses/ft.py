"""Factor transfer (Kim et al., 2018, "Paraphrasing Complex Network: Network Compression via
Factor Transfer", eq. 3)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._spatial import pool_to_smaller


class FactorTransfer(nn.Module):
    """mean(|n(s) - n(t)|^p2) with n(f) = L2-normalize(mean_c f^p1, flattened).

    Shapes: factor_s (B, C_s, H, W), factor_t (B, C_t, H', W') -> scalar; the larger map is
    pooled to the smaller spatial size. Paraphraser and translator live in the method.
    """

    def __init__(self, p1: int = 2, p2: int = 1) -> None:
        super().__init__()
        self.p1 = p1
        self.p2 = p2

    def forward(self, factor_s: torch.Tensor, factor_t: torch.Tensor) -> torch.Tensor:
        factor_s, factor_t = pool_to_smaller(factor_s, factor_t)
        difference = (self.factor(factor_s) - self.factor(factor_t)).abs()
        if self.p2 != 1:
            difference = difference.pow(self.p2)
        return difference.mean()

    def factor(self, f: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, H*W) normalised channel mean of f^p1."""
        return F.normalize(f.pow(self.p1).mean(1).reshape(f.shape[0], -1), dim=1)
