"""VGG with batch norm for CIFAR (Simonyan & Zisserman 2015, "Very Deep Convolutional Networks
for Large-Scale Image Recognition"): five conv blocks, no FC layers, one linear classifier."""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from .util import init_fan_out_normal

# Channels of the 3x3 convs in each of the five blocks.
CONFIGS: dict[str, list[list[int]]] = {
    "S": [[64], [128], [256], [512], [512]],  # vgg8
    "A": [[64], [128], [256, 256], [512, 512], [512, 512]],  # vgg11
    "B": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],  # vgg13
    "D": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],  # vgg16
    "E": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],  # vgg19
}


def _make_block(channels: list[int], in_channels: int, batch_norm: bool) -> nn.Sequential:
    """conv3x3(+BN)+ReLU per entry, with the block's last ReLU left out (applied in forward)."""
    layers: list[nn.Module] = []
    for out_channels in channels:
        layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
        in_channels = out_channels
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    """Blocks at 32/16/8/4/4 px (max pool 2x2 between blocks 0-3; the pool before block 4 only
    runs for 64 px inputs), global avg pool, ``classifier`` Linear(512, num_classes)."""

    def __init__(self, config: list[list[int]], batch_norm: bool = True, num_classes: int = 100) -> None:
        super().__init__()
        in_channels = [3] + [block[-1] for block in config[:-1]]
        self.block0 = _make_block(config[0], in_channels[0], batch_norm)
        self.block1 = _make_block(config[1], in_channels[1], batch_norm)
        self.block2 = _make_block(config[2], in_channels[2], batch_norm)
        self.block3 = _make_block(config[3], in_channels[3], batch_norm)
        self.block4 = _make_block(config[4], in_channels[4], batch_norm)
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(512, num_classes)

        init_fan_out_normal(self)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([
            self.block0, self.pool0, self.block1, self.pool1, self.block2,
            self.pool2, self.block3, self.pool3, self.block4, self.pool4,
        ])

    def get_bn_before_relu(self) -> list[nn.Module]:
        return [self.block1[-1], self.block2[-1], self.block3[-1], self.block4[-1]]

    def forward(
        self, x: torch.Tensor, is_feat: bool = False, preact: bool = False
    ) -> torch.Tensor | tuple[list[torch.Tensor], torch.Tensor]:
        height = x.shape[2]
        x = F.relu(self.block0(x))
        stem = x
        outputs, preacts = [], []
        for block, pool in ((self.block1, self.pool0), (self.block2, self.pool1), (self.block3, self.pool2)):
            pre = block(pool(x))
            x = F.relu(pre)
            preacts.append(pre)
            outputs.append(x)
        if height == 64:
            x = self.pool3(x)
        pre = self.block4(x)
        x = F.relu(pre)
        preacts.append(pre)
        outputs.append(x)
        pooled = self.pool4(x).flatten(1)
        logits = self.classifier(pooled)
        if not is_feat:
            return logits
        return [stem, *(preacts if preact else outputs), pooled], logits


def vgg8(num_classes: int = 100) -> VGG:
    return VGG(CONFIGS["S"], batch_norm=True, num_classes=num_classes)


def vgg11(num_classes: int = 100) -> VGG:
    return VGG(CONFIGS["A"], batch_norm=True, num_classes=num_classes)


def vgg13(num_classes: int = 100) -> VGG:
    return VGG(CONFIGS["B"], batch_norm=True, num_classes=num_classes)


def vgg16(num_classes: int = 100) -> VGG:
    return VGG(CONFIGS["D"], batch_norm=True, num_classes=num_classes)


def vgg19(num_classes: int = 100) -> VGG:
    return VGG(CONFIGS["E"], batch_norm=True, num_classes=num_classes)
