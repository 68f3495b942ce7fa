"""ShuffleNet (v1) for CIFAR (Zhang et al. 2018, "ShuffleNet: An Extremely Efficient
Convolutional Neural Network for Mobile Devices"), groups 3, stages 240/480/960."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .util import PreactStage


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(N, g*c, H, W) -> view (N, g, c, H, W) -> swap g and c -> (N, c*g, H, W)."""
    n, channels, height, width = x.size()
    grouped = x.view(n, groups, channels // groups, height, width)
    return grouped.permute(0, 2, 1, 3, 4).reshape(n, channels, height, width)


class Bottleneck(nn.Module):
    """Group 1x1 conv-BN-ReLU, channel shuffle, depthwise 3x3-BN-ReLU, group 1x1 conv-BN; then
    add the input (stride 1) or concatenate its 3x3 avg pool (stride 2); ReLU.
    Returns (output, preact). The first block after the 24-channel stem uses a dense 1x1."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int) -> None:
        super().__init__()
        self.stride = stride
        mid_planes = int(out_planes / 4)
        self.first_groups = 1 if in_planes == 24 else groups
        self.conv1 = nn.Conv2d(in_planes, mid_planes, kernel_size=1, groups=self.first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_planes)
        self.conv2 = nn.Conv2d(
            mid_planes, mid_planes, kernel_size=3, stride=stride, padding=1, groups=mid_planes, bias=False
        )
        self.bn2 = nn.BatchNorm2d(mid_planes)
        self.conv3 = nn.Conv2d(mid_planes, out_planes, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 2:
            self.shortcut = nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = self.shortcut(x)
        preact = torch.cat([out, shortcut], 1) if self.stride == 2 else out + shortcut
        return F.relu(preact), preact


class ShuffleNet(nn.Module):
    """1x1 stem (24 ch, 32 px), three stages each opening with a stride-2 concat block
    (16/8/4 px), 4x4 avg pool, ``linear`` head."""

    def __init__(self, out_planes: list[int], num_blocks: list[int], groups: int, num_classes: int = 100) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.in_planes = 24
        self.layer1 = self._make_layer(out_planes[0], num_blocks[0], groups)
        self.layer2 = self._make_layer(out_planes[1], num_blocks[1], groups)
        self.layer3 = self._make_layer(out_planes[2], num_blocks[2], groups)
        self.linear = nn.Linear(out_planes[2], num_classes)

    def _make_layer(self, out_planes: int, num_blocks: int, groups: int) -> PreactStage:
        blocks = []
        for i in range(num_blocks):
            # the stride-2 block concatenates its pooled input, so its branch makes the rest
            branch_planes = out_planes - self.in_planes if i == 0 else out_planes
            blocks.append(Bottleneck(self.in_planes, branch_planes, stride=2 if i == 0 else 1, groups=groups))
            self.in_planes = out_planes
        return PreactStage(*blocks)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.bn1, self.layer1, self.layer2, self.layer3])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """Last BN of each stage's last block (RepDistiller raises NotImplementedError here)."""
        return [self.layer1[-1].bn3, self.layer2[-1].bn3, self.layer3[-1].bn3]

    def forward(
        self, x: torch.Tensor, is_feat: bool = False, preact: bool = False
    ) -> torch.Tensor | tuple[list[torch.Tensor], torch.Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        stem = out
        outputs, preacts = [], []
        for stage in (self.layer1, self.layer2, self.layer3):
            out, stage_preact = stage(out)
            outputs.append(out)
            preacts.append(stage_preact)
        pooled = F.avg_pool2d(out, 4).flatten(1)
        logits = self.linear(pooled)
        if not is_feat:
            return logits
        return [stem, *(preacts if preact else outputs), pooled], logits


def ShuffleV1(num_classes: int = 100) -> ShuffleNet:
    return ShuffleNet(out_planes=[240, 480, 960], num_blocks=[4, 8, 4], groups=3, num_classes=num_classes)
