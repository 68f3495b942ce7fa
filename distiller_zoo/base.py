"""The method interface: one ``Distiller`` subclass per ``--distill`` key, registered by decorator.

A method owns its loss module(s) and extra trainable modules (embeds, regressors, connectors),
declares what it consumes, and returns its method loss. ``DistillTask`` (below) combines it with
cross-entropy and KD into the weighted total ``gamma*CE + alpha*KD + beta*method``.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helper.loop import StepOutput
from distiller_zoo.losses import DistillKL

METHODS: dict[str, type["Distiller"]] = {}


def register(key: str):
    """Class decorator: make a Distiller available as ``--distill <key>``."""

    def wrap(cls: type["Distiller"]) -> type["Distiller"]:
        if key in METHODS:
            raise ValueError(f"--distill key '{key}' registered twice")
        cls.key = key
        METHODS[key] = cls
        return cls

    return wrap


@dataclass
class DistillContext:
    """What a method may look at while building its modules."""

    opt: argparse.Namespace          # all flags (feat_dim, nce_k, kd_T, hint_layer, ...)
    student: nn.Module
    teacher: nn.Module
    student_shapes: list[torch.Size]  # feature shapes for a 2x3xSxS batch (S = 32, or --image_size; preact as asked)
    teacher_shapes: list[torch.Size]
    train_labels: Tensor              # (n_data,) labels of the training split (CRD sampling)
    device: torch.device

    @property
    def n_data(self) -> int:
        return int(self.train_labels.shape[0])

    def loss_options(self) -> argparse.Namespace:
        """The flags plus s_dim/t_dim/n_data, as the reference CRD/RRD/DCD losses expect them."""
        return argparse.Namespace(**vars(self.opt), s_dim=int(self.student_shapes[-1][1]),
                                  t_dim=int(self.teacher_shapes[-1][1]), n_data=self.n_data)


@dataclass
class Features:
    """Both networks' outputs for one batch, as a method sees them."""

    student: list[Tensor]
    teacher: list[Tensor]
    student_logits: Tensor
    teacher_logits: Tensor
    labels: Tensor
    index: Tensor


class Distiller(nn.Module):
    """Base class. Subclasses set the class attributes and implement ``loss``."""

    key: ClassVar[str]
    default_alpha: ClassVar[float] = 0.0       # -a when omitted
    default_beta: ClassVar[float] = 0.0        # -b when omitted
    default_gamma: ClassVar[float] = 1.0       # -r when omitted
    uses_features: ClassVar[bool] = True       # False: logits only (no is_feat forward)
    uses_preact: ClassVar[bool] = False        # features taken before the stage's last ReLU
    has_method_loss: ClassVar[bool] = True     # False (abound, fsp): main stage is CE (+KD) only
    init_stage: ClassVar[bool] = False         # pre-train some modules for --init_epochs first

    def __init__(self, context: DistillContext) -> None:
        super().__init__()

    def loss(self, features: Features) -> Tensor:
        """The method loss for one batch (unweighted)."""
        raise NotImplementedError

    def after_step(self) -> None:
        """Hook after optimizer.step() (memory-bank updates)."""

    def frozen_modules(self) -> list[nn.Module]:
        """Own modules that stay in eval mode and untrained in the main stage."""
        return []

    # init stage (abound, factor, fsp) -------------------------------------------------------
    def init_modules(self, student: nn.Module) -> list[nn.Module]:
        """Modules trained in the init stage (teacher and the rest of the student stay in eval)."""
        return []

    def init_loss(self, features: Features) -> Tensor:
        raise NotImplementedError

    def init_learning_rate(self, opt: argparse.Namespace) -> float:
        return opt.learning_rate

    def trainable_parameters(self) -> list[nn.Parameter]:
        frozen = {id(p) for module in self.frozen_modules() for p in module.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in frozen]


class DistillTask:
    """The student's training step: teacher forward under inference_mode, then weighted losses."""

    def __init__(self, student: nn.Module, teacher: nn.Module, method: Distiller, gamma: float, alpha: float,
                 beta: float, kd_T: float, stage: str = "main") -> None:
        self.model = student
        self.teacher = teacher
        self.method = method
        self.weights = {"ce": gamma, "kl": alpha, method.key: beta}
        self.kd_loss = DistillKL(kd_T)
        self.stage = stage
        self.init_modules = method.init_modules(student) if stage == "init" else []

    def modules(self) -> list[nn.Module]:
        """The student and the method's modules (their BatchNorm statistics are shared across ranks)."""
        return [self.model, self.method]

    def train_mode(self) -> None:
        self.teacher.eval()
        if self.stage == "init":
            self.model.eval()
            self.method.eval()
            for module in self.init_modules:
                module.train()
            return
        self.model.train()
        self.method.train()
        for module in self.method.frozen_modules():
            module.eval()

    def _forward(self, images: Tensor, labels: Tensor, index: Tensor) -> Features:
        method = self.method
        if self.stage == "init" or (method.uses_features and method.has_method_loss):
            student_feats, student_logits = self.model(images, is_feat=True, preact=method.uses_preact)
            with torch.inference_mode():
                teacher_feats, teacher_logits = self.teacher(images, is_feat=True, preact=method.uses_preact)
            # inference tensors cannot be saved for backward: clone into normal tensors
            teacher_feats = [f.clone() for f in teacher_feats]
        else:
            student_feats, student_logits = [], self.model(images)
            with torch.inference_mode():
                teacher_logits = self.teacher(images)
            teacher_feats = []
        return Features(student_feats, teacher_feats, student_logits, teacher_logits.clone(), labels, index)

    def compute(self, images: Tensor, labels: Tensor, index: Tensor) -> StepOutput:
        features = self._forward(images, labels, index)
        if self.stage == "init":
            loss = self.method.init_loss(features)
            return StepOutput(None, {self.method.key: loss}, loss)
        losses: dict[str, Tensor] = {"ce": F.cross_entropy(features.student_logits, labels)}
        if self.weights["kl"] > 0:
            losses["kl"] = self.kd_loss(features.student_logits, features.teacher_logits)
        if self.method.has_method_loss and self.weights[self.method.key] > 0:
            losses[self.method.key] = self.method.loss(features)
        total = sum(self.weights[name] * value for name, value in losses.items())
        return StepOutput(features.student_logits, losses, total)

    def after_step(self) -> None:
        if self.stage == "main":
            self.method.after_step()

    def state_dict(self) -> dict[str, Any]:
        return {"method": self.method.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "method" in state:
            self.method.load_state_dict(state["method"])
