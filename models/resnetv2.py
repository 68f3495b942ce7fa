"""ResNet-50 for 32x32 inputs (He et al. 2016, "Deep Residual Learning for Image Recognition"):
ImageNet bottleneck stages [3, 4, 6, 3] with a 3x3 stride-1 stem and no max pool."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .util import PreactStage


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand x4, each with BN; add shortcut; ReLU.
    Returns (output, preact)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = self.expansion * planes
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        preact = out + self.shortcut(x)
        return F.relu(preact), preact


class ResNet(nn.Module):
    """Four bottleneck stages (64/128/256/512 x4 channels at 32/16/8/4 px), global avg pool,
    ``linear`` head. Input (B, 3, 32, 32)."""

    def __init__(self, num_blocks: list[int], num_classes: int = 100) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(512, num_blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.linear = nn.Linear(512 * Bottleneck.expansion, num_classes)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)

    def _make_layer(self, planes: int, num_blocks: int, stride: int) -> PreactStage:
        blocks = []
        for block_stride in [stride] + [1] * (num_blocks - 1):
            blocks.append(Bottleneck(self.in_planes, planes, block_stride))
            self.in_planes = planes * Bottleneck.expansion
        return PreactStage(*blocks)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.bn1, self.layer1, self.layer2, self.layer3, self.layer4])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        return [self.layer1[-1].bn3, self.layer2[-1].bn3, self.layer3[-1].bn3, self.layer4[-1].bn3]

    def forward(
        self, x: torch.Tensor, is_feat: bool = False, preact: bool = False
    ) -> torch.Tensor | tuple[list[torch.Tensor], torch.Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        stem = out
        outputs, preacts = [], []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            out, stage_preact = stage(out)
            outputs.append(out)
            preacts.append(stage_preact)
        pooled = self.avgpool(out).flatten(1)
        logits = self.linear(pooled)
        if not is_feat:
            return logits
        return [stem, *(preacts if preact else outputs), pooled], logits


def ResNet50(num_classes: int = 100) -> ResNet:
    return ResNet([3, 4, 6, 3], num_classes)
