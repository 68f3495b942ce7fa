"""FitNets hint loss (Romero et al., 2015, "FitNets: Hints for Thin Deep Nets")."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class HintLoss(nn.Module):
    """Mean squared error between the (regressed) student hint and the teacher hint.

    Shapes: f_s, f_t of equal shape -> scalar. The regressor (ConvReg) lives in the method.
    """

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(f_s, f_t)
