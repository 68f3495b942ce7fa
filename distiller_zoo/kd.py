"""KD: Hinton et al., "Distilling the Knowledge in a Neural Network", 2015.

The KL term itself is part of every run (weighted by -a); this method adds nothing else.
"""
from __future__ import annotations

from distiller_zoo.base import Distiller, register


@register("kd")
class KD(Distiller):
    """Logit distillation only: loss = gamma*CE + alpha*KL (defaults -r 0.1 -a 0.9 -b 0)."""

    default_gamma = 0.1
    default_alpha = 0.9
    default_beta = 0.0
    uses_features = False
    has_method_loss = False
