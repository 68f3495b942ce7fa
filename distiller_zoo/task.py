"""The student's training step: teacher forward without gradients, then the weighted losses
``gamma*CE + alpha*KD + beta*method`` (Hinton et al. 2015 for the KD term).

A method with several augmented views (``Distiller.views``) receives a tuple of image batches: both
networks see each view in turn, CE sums over the views, KD and accuracy use the first one."""
from __future__ import annotations

import functools
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dataset.teacher_bank import TeacherBank
from distiller_zoo.base import Distiller, Features
from distiller_zoo.kd import kd_loss
from helper.loop import Progress, StepOutput, Task
from helper.run_folder import Stage


def loss_groups(weighted: dict[str, Tensor]) -> dict[str, Tensor]:
    """The weighted losses split by purpose: 'task' = gamma*CE and 'distill' = alpha*KD + beta*method
    (absent when both are off), for an optimizer that treats them apart (``--optimizer dot``)."""
    distill = [value for name, value in weighted.items() if name != "ce"]
    return {"task": weighted["ce"], **({"distill": functools.reduce(operator.add, distill)} if distill else {})}


class DistillTask(Task):
    """One stage (Stage.MAIN, or the Stage.INIT pre-training of abound/factor/fsp) of distilling into
    ``student``. With a teacher ``bank`` the teacher does not run: its outputs are looked up for each
    batch's (sample, view) index rows, which the run's loader yields when the run reads a bank."""

    def __init__(self, student: nn.Module, teacher: nn.Module, method: Distiller, gamma: float, alpha: float,
                 beta: float, kd_T: float, stage: Stage = Stage.MAIN, logit_stand: bool = False,
                 bank: TeacherBank | None = None) -> None:
        self.model = student
        self.teacher = teacher
        self.bank = bank
        self.method = method
        self.weights = {"ce": gamma, "kl": alpha, method.key: beta}
        self.kd_T, self.logit_stand = kd_T, logit_stand
        self.stage = Stage(stage)
        self.init_modules = method.init_modules(student) if self.stage == Stage.INIT else []
        self.deployed = method.deployed_model(student) if self.stage == Stage.MAIN else None

    def evaluated_model(self) -> nn.Module:
        """The network validated each epoch: the method's deployed model (SimKD), else the student."""
        return self.deployed if self.deployed is not None else self.model

    def checkpoint_entries(self) -> dict[str, Any]:
        """Entries saved beside the student's 'model': what rebuilds the deployed model, if any."""
        return {"deployed": self.method.deployed_entry()} if self.deployed is not None else {}

    def modules(self) -> list[nn.Module]:
        """The student and the method's modules (their BatchNorm statistics are shared across ranks)."""
        return [self.model, self.method]

    def train_mode(self) -> None:
        # frozen either way (no gradients); "train": BatchNorm with the batch's statistics (Distiller.teacher_mode)
        self.teacher.train(self.method.teacher_mode == "train")
        if self.stage == Stage.INIT:
            self.model.eval()
            self.method.eval()
            for module in self.init_modules:
                module.train()
            return
        self.model.train()
        self.method.train()
        for module in self.method.frozen_modules():
            module.eval()

    def _forward(self, images: Tensor, labels: Tensor, index: Tensor, progress: Progress) -> Features:
        """Student forward with gradients; the teacher's outputs from ``_teacher_outputs``."""
        method = self.method
        with_features = self.stage == Stage.INIT or (method.uses_features and method.has_method_loss)
        if with_features:
            student_feats, student_logits = self.model(images, is_feat=True, preact=method.uses_preact)
        else:
            student_feats, student_logits = [], self.model(images)
        teacher_feats, teacher_logits, samples = self._teacher_outputs(images, index, with_features)
        return Features(student_feats, teacher_feats, student_logits, teacher_logits, labels, samples, progress)

    def _teacher_outputs(self, images: Tensor, index: Tensor, with_features: bool
                         ) -> tuple[list[Tensor], Tensor, Tensor]:
        """(teacher features, teacher logits, sample indices). With a teacher bank they are looked up for
        the (sample, view) index rows (features: the pooled embedding alone); otherwise the teacher runs
        under no_grad (plain tensors that backward may save, so no copies: methods read teacher
        features and never modify them in place)."""
        if self.bank is not None:
            teacher_logits, teacher_embedding = self.bank.lookup(index[:, 0], index[:, 1])
            return ([teacher_embedding] if with_features else []), teacher_logits, index[:, 0]
        with torch.no_grad():
            if with_features:
                teacher_feats, teacher_logits = self.teacher(images, is_feat=True,
                                                              preact=self.method.teacher_uses_preact())
                return list(teacher_feats), teacher_logits, index
            return [], self.teacher(images), index

    def compute(self, images: Tensor | tuple[Tensor, ...], labels: Tensor, index: Tensor,
                progress: Progress = Progress()) -> StepOutput:
        views = images if isinstance(images, tuple) else (images,)
        features = self._forward(views[0], labels, index, progress)
        if self.stage == Stage.INIT:
            loss = self.method.init_loss(features)
            return StepOutput(None, {self.method.key: loss}, loss)
        if len(views) != len(self.method.views):
            raise ValueError(f"{self.method.key} trains on the views {self.method.views}, the batch has {len(views)}")
        features.views = {name: self._forward(view, labels, index, progress)
                          for name, view in zip(self.method.views[1:], views[1:])}
        losses: dict[str, Tensor] = {"ce": F.cross_entropy(features.student_logits, labels)}
        for view in features.views.values():
            losses["ce"] = losses["ce"] + F.cross_entropy(view.student_logits, labels)
        if self.weights["kl"] > 0:
            losses["kl"] = kd_loss(features.student_logits, features.teacher_logits, self.kd_T, self.logit_stand)
        if self.method.has_method_loss and self.weights[self.method.key] > 0:
            losses[self.method.key] = self.method.loss(features)
        weighted = {name: self.weights[name] * value for name, value in losses.items()}
        total = sum(weighted.values())
        logits = features.student_logits if features.deployed_logits is None else features.deployed_logits
        return StepOutput(logits, losses, total, loss_groups(weighted))

    def after_step(self) -> None:
        if self.stage == Stage.MAIN:
            self.method.after_step()

    def epoch_scalars(self) -> dict[str, float]:
        return self.method.epoch_scalars() if self.stage == Stage.MAIN else {}

    def state_dict(self) -> dict[str, Any]:
        return {"method": self.method.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "method" in state:
            self.method.load_state_dict(state["method"])
