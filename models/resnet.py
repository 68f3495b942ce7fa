"""CIFAR ResNets with basic blocks, depth 6n+2 (He et al. 2016, "Deep Residual Learning for
Image Recognition", Sec. 4.2), in RepDistiller's layout: three stages at 32x32, 16x16, 8x8."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .util import PreactStage


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, plus the (projected) input, then ReLU. Returns (output, preact)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        preact = out + shortcut
        return F.relu(preact), preact


class ResNet(nn.Module):
    """CIFAR ResNet: 3x3 stem conv, three stages of (depth-2)/6 basic blocks, 8x8 avg pool, fc.

    ``num_filters`` = [stem, stage1, stage2, stage3] channels. Input (B, 3, 32, 32).
    """

    def __init__(self, depth: int, num_filters: list[int], num_classes: int = 100) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (e.g. 20, 32, 56, 110), got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.in_planes = num_filters[0]
        self.conv1 = nn.Conv2d(3, num_filters[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_filters[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(num_filters[1], blocks_per_stage, stride=1)
        self.layer2 = self._make_layer(num_filters[2], blocks_per_stage, stride=2)
        self.layer3 = self._make_layer(num_filters[3], blocks_per_stage, stride=2)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(num_filters[3] * BasicBlock.expansion, num_classes)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)

    def _make_layer(self, planes: int, num_blocks: int, stride: int) -> PreactStage:
        downsample = None
        if stride != 1 or self.in_planes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.in_planes, planes * BasicBlock.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * BasicBlock.expansion),
            )
        blocks = [BasicBlock(self.in_planes, planes, stride, downsample)]
        self.in_planes = planes * BasicBlock.expansion
        blocks += [BasicBlock(self.in_planes, planes) for _ in range(1, num_blocks)]
        return PreactStage(*blocks)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.bn1, self.relu, self.layer1, self.layer2, self.layer3])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        return [self.layer1[-1].bn2, self.layer2[-1].bn2, self.layer3[-1].bn2]

    def forward(
        self, x: torch.Tensor, is_feat: bool = False, preact: bool = False
    ) -> torch.Tensor | tuple[list[torch.Tensor], torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        stem = x
        x, pre1 = self.layer1(x)
        f1 = x
        x, pre2 = self.layer2(x)
        f2 = x
        x, pre3 = self.layer3(x)
        f3 = x
        pooled = self.avgpool(x).flatten(1)
        logits = self.fc(pooled)
        if not is_feat:
            return logits
        stages = [pre1, pre2, pre3] if preact else [f1, f2, f3]
        return [stem, *stages, pooled], logits


def resnet8(num_classes: int = 100) -> ResNet:
    return ResNet(8, [16, 16, 32, 64], num_classes)


def resnet14(num_classes: int = 100) -> ResNet:
    return ResNet(14, [16, 16, 32, 64], num_classes)


def resnet20(num_classes: int = 100) -> ResNet:
    return ResNet(20, [16, 16, 32, 64], num_classes)


def resnet32(num_classes: int = 100) -> ResNet:
    return ResNet(32, [16, 16, 32, 64], num_classes)


def resnet44(num_classes: int = 100) -> ResNet:
    return ResNet(44, [16, 16, 32, 64], num_classes)


def resnet56(num_classes: int = 100) -> ResNet:
    return ResNet(56, [16, 16, 32, 64], num_classes)


def resnet110(num_classes: int = 100) -> ResNet:
    return ResNet(110, [16, 16, 32, 64], num_classes)


def resnet8x4(num_classes: int = 100) -> ResNet:
    """resnet8 with 4x wider stages (stem 32, stages 64/128/256)."""
    return ResNet(8, [32, 64, 128, 256], num_classes)


def resnet32x4(num_classes: int = 100) -> ResNet:
    """resnet32 with 4x wider stages (stem 32, stages 64/128/256)."""
    return ResNet(32, [32, 64, 128, 256], num_classes)
