"""Contrastive representation distillation (Tian et al., 2020)."""
from .criterion import ContrastLoss, CRDLoss, Embed
from .memory import ContrastMemory, ContrastSampler

__all__ = ["CRDLoss", "Embed", "ContrastLoss", "ContrastMemory", "ContrastSampler"]
