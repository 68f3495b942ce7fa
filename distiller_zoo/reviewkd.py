"""ReviewKD: Chen, Liu, Zhao & Jia, "Distilling Knowledge via Knowledge Review", CVPR 2021.

The student's stage outputs and pooled vector (as a 1x1 map) are reviewed from deep to shallow:
at each level an attention-based fusion (ABF) module projects the student feature to a common
width, fuses it with the fused result of the deeper level (per-pixel weights from a 1x1
convolution and a sigmoid), and maps it to the teacher's channels and size of that level. The
outputs match the teacher's pre-ReLU stage outputs and pooled vector by the hierarchical context
loss (MSE of the maps plus MSE after 4x4, 2x2 and 1x1 average pooling, weighted 1, 1/2, 1/4, 1/8,
normalised). Its weight ramps up linearly over the first epochs. Settings follow the official
CIFAR-100 code (dvlab-research/ReviewKD) and its mdistiller port; the ABF channels and sizes come
from the pair's feature shapes instead of per-architecture tables.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distiller_zoo.base import DistillContext, Distiller, Features, Flag, register, warmup_factor
from helper.errors import UserError

__all__ = ["ABF", "hcl_loss"]

MAX_MID_CHANNEL = 512  # the ABF width: the student's deepest channel count, at most this


class ABF(nn.Module):
    """Attention-based fusion: x -> 1x1 conv + BN (mid channels); with ``fuse``, a weighted sum with
    the deeper level's fused map (resized to x's size, nearest) using 2 per-pixel sigmoid weights;
    resized (nearest) to ``out_shape``; 3x3 conv + BN to the teacher's channels.

    Shapes: x (B, C_in, H, W), residual (B, C_mid, h, w) or None -> (output (B, C_out, *out_shape),
    fused (B, C_mid, *out_shape)), the latter passed to the next shallower level.
    """

    def __init__(self, in_channel: int, mid_channel: int, out_channel: int, fuse: bool) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channel, mid_channel, kernel_size=1, bias=False),
                                   nn.BatchNorm2d(mid_channel))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channel, out_channel, kernel_size=3, stride=1, padding=1, bias=False),
                                   nn.BatchNorm2d(out_channel))
        self.att_conv = (nn.Sequential(nn.Conv2d(mid_channel * 2, 2, kernel_size=1), nn.Sigmoid()) if fuse
                         else None)
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: Tensor, residual: Tensor | None = None, shape: tuple[int, int] | None = None,
                out_shape: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
        x = self.conv1(x)
        if self.att_conv is not None:
            residual = F.interpolate(residual, shape, mode="nearest")
            weights = self.att_conv(torch.cat([x, residual], dim=1))       # (B, 2, H, W)
            x = x * weights[:, 0:1] + residual * weights[:, 1:2]
        if out_shape is not None and tuple(x.shape[-2:]) != tuple(out_shape):
            x = F.interpolate(x, out_shape, mode="nearest")
        return self.conv2(x), x


def hcl_loss(fstudent: list[Tensor], fteacher: list[Tensor]) -> Tensor:
    """Hierarchical context loss, summed over levels of equal-shaped (B, C, H, W) maps.

    Per level: (MSE + sum_l w_l * MSE(avgpool_l(fs), avgpool_l(ft))) / (1 + sum_l w_l) over the
    pooled sizes l in 4, 2, 1 smaller than H, w_l halving from 1/2 for each size used.
    """
    loss_all = fstudent[0].new_zeros(())
    for fs, ft in zip(fstudent, fteacher):
        height = fs.shape[2]
        loss = F.mse_loss(fs, ft, reduction="mean")
        weight, total = 1.0, 1.0
        for level in (4, 2, 1):
            if level >= height:
                continue
            weight /= 2.0
            loss = loss + F.mse_loss(F.adaptive_avg_pool2d(fs, (level, level)),
                                     F.adaptive_avg_pool2d(ft, (level, level)), reduction="mean") * weight
            total += weight
        loss_all = loss_all + loss / total
    return loss_all


def as_map(feature: Tensor) -> Tensor:
    """A pooled vector (B, C) as a (B, C, 1, 1) map; maps unchanged."""
    return feature.reshape(*feature.shape, 1, 1) if feature.dim() == 2 else feature


def _map_shape(shape: torch.Size) -> tuple[int, ...]:
    return tuple(shape) + (1, 1) if len(shape) == 2 else tuple(shape)


@register
class ReviewKD(Distiller):
    """Review path over the student's feats[1:] (stage outputs + pooled vector), matched by the
    hierarchical context loss to the teacher's pre-ReLU feats[1:], times min(epoch / warm-up, 1).

    Default -b 5: the official CIFAR-100 weight for resnet32x4->resnet8x4, wrn_40_2->wrn_16_2 /
    wrn_40_1 / ShuffleV1 and resnet32x4->ShuffleV1 (scripts/reviewKD.sh, mdistiller reviewkd.yaml);
    the official script uses -b 0.6 for resnet56->resnet20, 1 for resnet110->resnet32 and 8 for
    resnet32x4->ShuffleV2. No KD term (-a 0), as in the official CIFAR-100 runs.
    """

    display_name = "ReviewKD"
    paper = "Chen, Liu, Zhao & Jia, Distilling Knowledge via Knowledge Review, CVPR 2021"
    warmup_flag = "--reviewkd_warmup"
    flags = (Flag("--reviewkd_warmup", 20, "epochs over which the ReviewKD loss weight ramps up as "
                  "min(epoch / N, 1); 0: full weight from the start", minimum=0),)
    default_beta = 5.0
    teacher_preact = True  # student features after ReLU, teacher's before (official; mdistiller STU_PREACT False)

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        student = [_map_shape(shape) for shape in context.student_shapes[1:]]
        teacher = [_map_shape(shape) for shape in context.teacher_shapes[1:]]
        check_review_pair(student, teacher, context.opt)
        in_channels = [shape[1] for shape in student]
        mid_channel = min(MAX_MID_CHANNEL, in_channels[-1])
        abfs = [ABF(in_channel, mid_channel, shape[1], fuse=index < len(student) - 1)
                for index, (in_channel, shape) in enumerate(zip(in_channels, teacher))]
        self.abfs = nn.ModuleList(abfs[::-1])                       # deepest level first, as official
        self.shapes = [shape[2:] for shape in student[::-1]]         # student sizes, deepest first
        self.out_shapes = [shape[2:] for shape in teacher[::-1]]     # teacher sizes, deepest first
        self.warmup_epochs = context.opt.reviewkd_warmup

    def review(self, student_features: list[Tensor]) -> list[Tensor]:
        """Student features (shallow to deep, maps) -> ABF outputs in the teacher's shapes (shallow to deep)."""
        deep_first = student_features[::-1]
        output, fused = self.abfs[0](deep_first[0], out_shape=self.out_shapes[0])
        results = [output]
        for feature, abf, shape, out_shape in zip(deep_first[1:], self.abfs[1:], self.shapes[1:],
                                                  self.out_shapes[1:]):
            output, fused = abf(feature, fused, shape, out_shape)
            results.insert(0, output)
        return results

    def loss(self, features: Features) -> Tensor:
        reviewed = self.review([as_map(f) for f in features.student[1:]])
        teacher = [as_map(f) for f in features.teacher[1:]]
        return warmup_factor(features.progress.epoch, self.warmup_epochs) * hcl_loss(reviewed, teacher)


def check_review_pair(student: list[tuple[int, ...]], teacher: list[tuple[int, ...]], opt: object) -> None:
    """UserError unless both networks have the same number of reviewed features (stages + pooled)."""
    if len(student) == len(teacher) and all(len(shape) == 4 for shape in student + teacher):
        return
    student_name, teacher_name = getattr(opt, "model_s", "the student"), getattr(opt, "model_t", "the teacher")
    raise UserError(
        f"--distill reviewkd matches each level of the student (stage outputs, then the pooled vector) to the "
        f"teacher's level of the same depth, so both need the same number of levels: {student_name} has "
        f"{len(student)} ({', '.join(str(s[1:]) for s in student)}), {teacher_name} has {len(teacher)} "
        f"({', '.join(str(s[1:]) for s in teacher)}). The official pairs are of equal depth: resnet32x4 / wrn / "
        f"resnet56 / resnet110 teachers with resnet, wrn, ShuffleV1 or ShuffleV2 students, vgg13 or ResNet50 "
        f"with vgg8 or MobileNetV2. Choose such a pair, or a method without level pairing (e.g. --distill kd).")
