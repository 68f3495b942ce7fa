"""MobileNetV2 for CIFAR (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear
Bottlenecks"), the half-width variant used by RepDistiller (expansion 6, width 0.5)."""
from __future__ import annotations


import torch
from torch import nn

from .util import batch_norm_without_update, init_fan_out_normal

# expansion t, output channels c, repeats n, first stride s (Table 2 of the paper)
_STAGES = [
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
]


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Sequential:
    padding = kernel_size // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expand-BN-ReLU, 3x3 depthwise-BN-ReLU, 1x1 project-BN (linear bottleneck);
    identity shortcut when stride 1 and in == out. The expand conv exists even for t=1."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual stride must be 1 or 2, got {stride}")
        hidden = in_channels * expand_ratio
        self.use_res_connect = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """Stride-2 stem, seven inverted-residual stages in ``blocks``, 1x1 conv to 1280, avg pool,
    ``classifier`` = Sequential(Linear). Stage outputs are linear (no ReLU), so ``preact`` has
    no effect. Input (B, 3, input_size, input_size)."""

    def __init__(
        self, expansion: int, num_classes: int = 100, input_size: int = 32, width_mult: float = 1.0
    ) -> None:
        super().__init__()
        if input_size % 32 != 0:
            raise ValueError(f"MobileNetV2 input_size must be a multiple of 32, got {input_size}")
        in_channels = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(3, in_channels, 3, stride=2)

        self.blocks = nn.ModuleList()
        for t, c, n, s in _STAGES:
            out_channels = int(c * width_mult)
            layers = []
            for stride in [s] + [1] * (n - 1):
                layers.append(InvertedResidual(in_channels, out_channels, stride, expansion if t is None else t))
                in_channels = out_channels
            self.blocks.append(nn.Sequential(*layers))

        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(in_channels, self.last_channel, 1, stride=1)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, num_classes))
        self.avgpool = nn.AvgPool2d(input_size // 16, ceil_mode=True)

        init_fan_out_normal(self)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.blocks])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        return [self.blocks[i][-1].conv[-1] for i in (1, 2, 4, 6)]

    def map_before_pool(self, last_stage: torch.Tensor) -> torch.Tensor:
        """The map ``forward`` average-pools into ``classifier`` (``conv2``, 1x1 conv-BN-ReLU to
        1280 channels, of feats[-2]), without updating BatchNorm statistics."""
        conv, norm, relu = self.conv2
        return relu(batch_norm_without_update(norm, conv(last_stage)))

    def forward(
        self, x: torch.Tensor, is_feat: bool = False, preact: bool = False
    ) -> torch.Tensor | tuple[list[torch.Tensor], torch.Tensor]:
        out = self.conv1(x)
        stem = out
        stage_outputs = []
        for i, block in enumerate(self.blocks):
            out = block(out)
            if i in (1, 2, 4, 6):
                stage_outputs.append(out)
        out = self.conv2(out)
        pooled = self.avgpool(out).flatten(1)
        logits = self.classifier(pooled)
        if not is_feat:
            return logits
        return [stem, *stage_outputs, pooled], logits


def mobile_half(num_classes: int = 100) -> MobileNetV2:
    """MobileNetV2 with expansion 6 and width multiplier 0.5 (RepDistiller's ``MobileNetV2``)."""
    return MobileNetV2(expansion=6, num_classes=num_classes, width_mult=0.5)
