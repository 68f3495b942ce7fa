"""CAT-KD: Guo, Yan, Li & Lin, "Class Attention Transfer Based Knowledge Distillation", CVPR 2023.

A network's class activation maps (Zhou et al., CVPR 2016) are its classifier applied as a 1x1
convolution, weights only, to the map it average-pools into that classifier: CAM_k = sum_c W_kc F_c,
whose spatial mean is the logit of class k (without the bias). CAT average-pools the student's and
the teacher's CAMs to --cat_resolution x --cat_resolution cells, optionally L2-normalises each map
over its cells (--cat_normalize), and takes their mean squared error; CAT-KD trains with CE + beta * CAT
and no KD term (the official onlyCAT=True is -r 0). The official code rebuilds the student with a
bias-free 1x1-conv head whose pooled output is the logit; here the same maps come from the unchanged
student's map and its linear layer's weights, and its logits keep the linear layer's bias.

The official CIFAR-100 configs (configs/cifar100/CAT_KD/*.yaml) set -r 1 -a 0 and, per pair, the
weight, resolution and normalisation in ``OFFICIAL_SETTINGS`` below; the defaults are those of
resnet32x4 -> resnet8x4 (-b 15, resolution 2, no normalisation), and a run of another listed pair
with other values prints the official ones.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distiller_zoo.base import DistillContext, Distiller, Features, Flag, register
from helper import distributed
from models import get_classifier, map_before_pool

__all__ = ["CAT_loss", "class_activation_maps"]

# (teacher, student) -> (CAT_loss_weight = -b, CAM_RESOLUTION, IF_NORMALIZE) of the official configs
OFFICIAL_SETTINGS: dict[tuple[str, str], tuple[float, int, bool]] = {
    ("resnet32x4", "resnet8x4"): (15.0, 2, False), ("wrn_40_2", "wrn_16_2"): (12.0, 2, False),
    ("wrn_40_2", "wrn_40_1"): (1.5, 2, False), ("resnet56", "resnet20"): (0.7, 2, False),
    ("resnet110", "resnet32"): (1.8, 2, False), ("vgg13", "vgg8"): (4.5, 2, False),
    ("resnet32x4", "ShuffleV1"): (600.0, 4, True), ("resnet32x4", "ShuffleV2"): (600.0, 4, True),
    ("wrn_40_2", "ShuffleV1"): (80.0, 4, True), ("vgg13", "MobileNetV2"): (15.0, 2, True),
    ("ResNet50", "MobileNetV2"): (40.0, 2, True),
}


def class_activation_maps(feature_map: Tensor, classifier_weight: Tensor) -> Tensor:
    """CAM_k(x, y) = sum_c W[k, c] F[c, x, y]: the classifier as a bias-free 1x1 convolution.

    Shapes: feature_map (B, C, H, W), classifier_weight (K, C) -> (B, K, H, W)."""
    return F.conv2d(feature_map, classifier_weight[:, :, None, None])


def CAT_loss(CAM_Student: Tensor, CAM_Teacher: Tensor, CAM_RESOLUTION: int, IF_NORMALIZE: bool) -> Tensor:
    """The official CAT loss (official name and argument names): both CAM stacks adaptive-average-pooled to CAM_RESOLUTION^2 cells, each map
    L2-normalised over its cells when IF_NORMALIZE, then the MSE averaged over all elements.

    Shapes: CAM_Student (B, K, Hs, Ws), CAM_Teacher (B, K, Ht, Wt) -> scalar."""
    size = (CAM_RESOLUTION, CAM_RESOLUTION)
    student = F.adaptive_avg_pool2d(CAM_Student, size)
    teacher = F.adaptive_avg_pool2d(CAM_Teacher, size)
    if IF_NORMALIZE:
        student, teacher = F.normalize(student, dim=(2, 3)), F.normalize(teacher, dim=(2, 3))
    return F.mse_loss(student, teacher)


def network_cams(model: nn.Module, feats: list[Tensor]) -> Tensor:
    """Class activation maps (B, K, H, W) of ``model`` for the batch whose ``is_feat`` features are ``feats``."""
    return class_activation_maps(map_before_pool(model, feats), get_classifier(model).weight)


@register
class ClassAttentionTransfer(Distiller):
    """MSE between the pooled class activation maps of student and teacher (CE + beta * CAT)."""

    display_name = "CAT-KD"
    paper = "Guo, Yan, Li & Lin, Class Attention Transfer Based Knowledge Distillation, CVPR 2023"
    flags = (Flag("--cat_resolution", 2, "CAT-KD: side of the average-pooled class activation maps (official "
                  "CAM_RESOLUTION; 4 for the ShuffleNet pairs)", minimum=1),
             Flag("--cat_normalize", False, "CAT-KD: L2-normalise each pooled class activation map before the MSE "
                  "(official IF_NORMALIZE; on for the ShuffleNet and MobileNetV2 pairs)"))
    default_beta = 15.0

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        opt = context.opt
        self.resolution, self.normalize = opt.cat_resolution, opt.cat_normalize
        # functions holding the networks, so that they are not registered as this method's modules
        self.student_cams = partial(network_cams, context.student)
        self.teacher_cams = partial(network_cams, context.teacher)
        official = OFFICIAL_SETTINGS.get((getattr(opt, "model_t", ""), getattr(opt, "model_s", "")))
        if (official and (getattr(opt, "beta", None), self.resolution, self.normalize) != official
                and distributed.is_main()):
            beta, resolution, normalize = official
            print(f"CAT-KD: the official setting for {opt.model_t} -> {opt.model_s} is -b {beta:g} --cat_resolution "
                  f"{resolution}{' --cat_normalize' if normalize else ''}; this run uses -b {opt.beta:g} "
                  f"--cat_resolution {self.resolution}{' --cat_normalize' if self.normalize else ''}.")

    def loss(self, features: Features) -> Tensor:
        with torch.no_grad():
            teacher_cams = self.teacher_cams(features.teacher)
        return CAT_loss(self.student_cams(features.student), teacher_cams, self.resolution, self.normalize)
