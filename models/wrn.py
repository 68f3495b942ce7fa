"""Wide ResNets WRN-d-k for CIFAR (Zagoruyko & Komodakis 2016, "Wide Residual Networks"):
pre-activation basic blocks, (d-4)/6 per stage, widths 16k/32k/64k."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .util import batch_norm_without_update


class BasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-conv3x3, plus identity or a 1x1 projection
    of the *activated* input when the width changes."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = (
            None
            if self.equal_in_out
            else nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(activated)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        shortcut = x if self.convShortcut is None else self.convShortcut(activated)
        return shortcut + out


class NetworkBlock(nn.Module):
    """One stage: ``num_layers`` blocks in ``self.layer``, the first one strided."""

    def __init__(
        self, num_layers: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *(
                BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
                for i in range(num_layers)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """3x3 stem conv, three NetworkBlocks (32/16/8 px), final BN-ReLU, 8x8 avg pool, fc.

    Stage outputs are pre-activation sums; with ``preact`` the features are those sums passed
    through the BN that follows them (the BN before the next ReLU), as in RepDistiller.
    """

    def __init__(self, depth: int, num_classes: int = 100, widen_factor: int = 1, drop_rate: float = 0.0) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4 (e.g. 16, 28, 40), got {depth}")
        blocks_per_stage = (depth - 4) // 6
        channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, channels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(blocks_per_stage, channels[0], channels[1], 1, drop_rate)
        self.block2 = NetworkBlock(blocks_per_stage, channels[1], channels[2], 2, drop_rate)
        self.block3 = NetworkBlock(blocks_per_stage, channels[2], channels[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(channels[3], num_classes)
        self.nChannels = channels[3]

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                module.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.data.fill_(1)
                module.bias.data.zero_()
            elif isinstance(module, nn.Linear):
                module.bias.data.zero_()

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.block1, self.block2, self.block3])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        return [self.block2.layer[0].bn1, self.block3.layer[0].bn1, self.bn1]

    def map_before_pool(self, last_stage: torch.Tensor) -> torch.Tensor:
        """The map ``forward`` average-pools into ``fc`` (final BN-ReLU of feats[-2]), without
        updating BatchNorm statistics."""
        return self.relu(batch_norm_without_update(self.bn1, last_stage))

    def forward(
        self, x: torch.Tensor, is_feat: bool = False, preact: bool = False
    ) -> torch.Tensor | tuple[list[torch.Tensor], torch.Tensor]:
        out = self.conv1(x)
        stem = out
        f1 = self.block1(out)
        f2 = self.block2(f1)
        f3 = self.block3(f2)
        out = self.relu(self.bn1(f3))
        pooled = F.avg_pool2d(out, 8).view(-1, self.nChannels)
        logits = self.fc(pooled)
        if not is_feat:
            return logits
        stages = [f1, f2, f3]
        if preact:
            stages = [batch_norm_without_update(bn, f) for bn, f in zip(self.get_bn_before_relu(), stages)]
        return [stem, *stages, pooled], logits


def wrn_40_2(num_classes: int = 100) -> WideResNet:
    return WideResNet(depth=40, widen_factor=2, num_classes=num_classes)


def wrn_40_1(num_classes: int = 100) -> WideResNet:
    return WideResNet(depth=40, widen_factor=1, num_classes=num_classes)


def wrn_16_2(num_classes: int = 100) -> WideResNet:
    return WideResNet(depth=16, widen_factor=2, num_classes=num_classes)


def wrn_16_1(num_classes: int = 100) -> WideResNet:
    return WideResNet(depth=16, widen_factor=1, num_classes=num_classes)
