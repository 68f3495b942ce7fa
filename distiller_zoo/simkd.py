"""SimKD: Chen et al., "Knowledge Distillation with the Reused Teacher Classifier", CVPR 2022.

The student's last feature map (feats[-2]) goes through a projector (1x1 conv to t/f channels, 3x3
conv, 1x1 conv to the teacher's t channels, each followed by BN-ReLU) and is trained with one MSE
loss to match the teacher's last feature map, the larger of the two maps first average-pooled to
the other's size. The student is then deployed as backbone + projector + the teacher's frozen
classifier: the accuracy logged each epoch, the best checkpoint and the result are those of that
network. Checkpoints hold the bare student under 'model' (it loads into ``model_dict[arch]``) and
the projector and the teacher's classifier under 'deployed'; ``distiller_zoo.deployed_from_checkpoint``
rebuilds the deployed network. Official defaults (scripts/run_distill.sh): -r 0 -a 0 -b 1, factor 2.
"""
from __future__ import annotations

import copy
from functools import partial
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distiller_zoo.base import DistillContext, Distiller, Features, Flag, register
from helper.errors import UserError
from models import get_classifier, map_before_pool
from models.util import pool_to_smaller

__all__ = ["SimKD"]


class SimKD(nn.Module):
    """The SimKD projector (official name and signature): a bottleneck of 1x1 conv (s_n -> t_n // factor),
    3x3 conv, 1x1 conv (-> t_n), each conv bias-free and followed by BN-ReLU, in ``transfer``.

    ``forward(feat_s (B, s_n, Hs, Ws), feat_t (B, t_n, Ht, Wt), cls_t)`` pools the larger map to the
    smaller one's size and returns (trans_feat_s, trans_feat_t) of shape (B, t_n, min H, min W) and
    pred_feat_s (B, num_classes) = cls_t(global average pool of trans_feat_s).
    """

    def __init__(self, *, s_n: int, t_n: int, factor: int = 2) -> None:
        super().__init__()
        middle = t_n // factor
        self.transfer = nn.Sequential(
            nn.Conv2d(s_n, middle, kernel_size=1, bias=False),
            nn.BatchNorm2d(middle),
            nn.ReLU(inplace=True),
            nn.Conv2d(middle, middle, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(middle),
            nn.ReLU(inplace=True),
            nn.Conv2d(middle, t_n, kernel_size=1, bias=False),
            nn.BatchNorm2d(t_n),
            nn.ReLU(inplace=True),
        )

    def forward(self, feat_s: Tensor, feat_t: Tensor, cls_t: nn.Module) -> tuple[Tensor, Tensor, Tensor]:
        source, trans_feat_t = pool_to_smaller(feat_s, feat_t)
        trans_feat_s = self.transfer(source)
        return trans_feat_s, trans_feat_t, self.classify(trans_feat_s, cls_t)

    @staticmethod
    def classify(trans_feat_s: Tensor, cls_t: nn.Module) -> Tensor:
        """Logits of the teacher's classifier on the globally average-pooled projected map."""
        return cls_t(F.adaptive_avg_pool2d(trans_feat_s, 1).flatten(1))


class SimKDStudent(nn.Module):
    """The network SimKD deploys: student -> feats[-2] (average-pooled to ``teacher_size`` when larger)
    -> projector -> global average pool -> the teacher's classifier. ``forward(images)`` -> logits."""

    def __init__(self, student: nn.Module, projector: SimKD, classifier: nn.Linear,
                 teacher_size: tuple[int, int]) -> None:
        super().__init__()
        self.student, self.projector, self.classifier = student, projector, classifier
        self.teacher_size = tuple(teacher_size)

    def forward(self, images: Tensor) -> Tensor:
        student_map = self.student(images, is_feat=True)[0][-2]
        if student_map.shape[2] * student_map.shape[3] > self.teacher_size[0] * self.teacher_size[1]:
            student_map = F.adaptive_avg_pool2d(student_map, self.teacher_size)
        return self.projector.classify(self.projector.transfer(student_map), self.classifier)


@register
class ReusedTeacherClassifier(Distiller):
    """MSE between the projected student map and the teacher's last map; the student is deployed with
    the projector and the teacher's frozen classifier (SimKDStudent)."""

    display_name = "SimKD"
    paper = "Chen et al., Knowledge Distillation with the Reused Teacher Classifier, CVPR 2022"
    flags = (Flag("--simkd_factor", 2, "SimKD projector bottleneck: 1x1 conv to (teacher channels / factor), "
                  "3x3 conv, 1x1 conv back (the official -f)", minimum=1),)
    default_gamma = 0.0
    default_alpha = 0.0
    default_beta = 1.0

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        factor = context.opt.simkd_factor
        # the map the teacher pools into its classifier: classifier-width channels, feats[-2]'s size
        teacher_channels = int(context.teacher_shapes[-1][1])
        if teacher_channels // factor < 1:
            raise UserError(f"--simkd_factor {factor} leaves no channels in the SimKD projector: the teacher's "
                            f"last map has {teacher_channels} channels. Use a factor of at most {teacher_channels} "
                            "(the default is 2).")
        self.student_channels = int(context.student_shapes[-2][1])
        self.teacher_channels, self.factor = teacher_channels, factor
        self.teacher_size = tuple(int(size) for size in context.teacher_shapes[-2][2:])
        self.projector = SimKD(s_n=self.student_channels, t_n=teacher_channels, factor=factor)
        self.teacher_classifier = copy.deepcopy(get_classifier(context.teacher)).requires_grad_(False)
        self.teacher_map = partial(map_before_pool, context.teacher)  # a function, not a registered module

    def loss(self, features: Features) -> Tensor:
        with torch.no_grad():
            teacher_map = self.teacher_map(features.teacher)
        trans_feat_s, trans_feat_t, pred_feat_s = self.projector(features.student[-2], teacher_map,
                                                                 self.teacher_classifier)
        features.deployed_logits = pred_feat_s
        return F.mse_loss(trans_feat_s, trans_feat_t)

    def frozen_modules(self) -> list[nn.Module]:
        return [self.teacher_classifier]

    def deployed_model(self, student: nn.Module) -> nn.Module:
        return SimKDStudent(student, self.projector, self.teacher_classifier, self.teacher_size)

    def deployed_entry(self) -> dict[str, Any]:
        return {"method": self.key, "student_channels": self.student_channels,
                "teacher_channels": self.teacher_channels, "factor": self.factor,
                "teacher_size": list(self.teacher_size), "projector": self.projector.state_dict(),
                "classifier": self.teacher_classifier.state_dict()}

    @classmethod
    def load_deployed(cls, student: nn.Module, entry: dict[str, Any]) -> nn.Module:
        projector = SimKD(s_n=int(entry["student_channels"]), t_n=int(entry["teacher_channels"]),
                          factor=int(entry["factor"]))
        weight = entry["classifier"]["weight"]
        classifier = nn.Linear(int(weight.shape[1]), int(weight.shape[0]))
        try:
            projector.load_state_dict(entry["projector"], strict=True)
            classifier.load_state_dict(entry["classifier"], strict=True)
        except RuntimeError as error:
            raise UserError(f"The checkpoint's SimKD projector or teacher classifier does not load "
                            f"({str(error).splitlines()[0][:160]}); the file is damaged or was edited. Use "
                            "another checkpoint of the run (<model>_last.pth, ckpt_epoch_N.pth).") from None
        device = next(student.parameters()).device
        return SimKDStudent(student, projector.to(device), classifier.to(device).requires_grad_(False),
                            tuple(entry["teacher_size"])).eval()
