"""DOT: Zhao, Cui, Song & Liang, "DOT: A Distillation-Oriented Trainer", ICCV 2023.

DOT is an optimizer (``--optimizer dot``, helper/optimizers.py) that any method can train with.
``--distill dot`` names KD trained by it, the official CIFAR-100 setting (mdistiller: KD
distiller, the DOT trainer, delta 0.075): KD's defaults (-r 0.1 -a 0.9 -b 0, --kd_T 4) with
``--optimizer dot --dot_delta 0.075``. Its runs keep the folders ``dot_...`` and the record
``distill: dot`` whichever of the two spellings started them.
"""
from __future__ import annotations

from distiller_zoo.base import Preset, register_preset
from helper.optimizers import DistillationOrientedTrainer

__all__ = ["DistillationOrientedTrainer"]

register_preset(Preset("dot", method="kd", optimizer="dot"))
