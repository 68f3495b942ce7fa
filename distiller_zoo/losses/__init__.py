"""RepDistiller-compatible distillation losses, one small module each."""
from .ab import ABLoss
from .at import Attention
from .cc import Correlation
from .dcd import DCDLoss
from .fitnet import HintLoss
from .fsp import FSP
from .ft import FactorTransfer
from .kd import DistillKL
from .nst import NSTLoss
from .pkt import PKT
from .rkd import RKDLoss
from .rrd import RRDLoss
from .sp import Similarity
from .vid import VIDLoss

__all__ = [
    "DistillKL",
    "HintLoss",
    "Attention",
    "Similarity",
    "Correlation",
    "VIDLoss",
    "RKDLoss",
    "PKT",
    "ABLoss",
    "FactorTransfer",
    "FSP",
    "NSTLoss",
    "RRDLoss",
    "DCDLoss",
]
