"""ShuffleNetV2 1.0x for CIFAR (Ma et al. 2018, "ShuffleNet V2: Practical Guidelines for
Efficient CNN Architecture Design"), stages 116/232/464, 1x1 stem and no max pool."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .shufflenetv1 import channel_shuffle
from .util import PreactStage, batch_norm_without_update

# net size -> (stage channels + last conv channels, blocks per stage after the down block)
CONFIGS: dict[float, tuple[tuple[int, int, int, int], tuple[int, int, int]]] = {
    0.5: ((48, 96, 192, 1024), (3, 7, 3)),
    1.0: ((116, 232, 464, 1024), (3, 7, 3)),
    1.5: ((176, 352, 704, 1024), (3, 7, 3)),
    2.0: ((224, 488, 976, 2048), (3, 7, 3)),
}


class BasicBlock(nn.Module):
    """Split channels in half; the second half goes 1x1-BN-ReLU, dw3x3-BN, 1x1-BN, ReLU; concat
    with the untouched first half; shuffle. Returns (output, preact) where preact is the concat
    before the last ReLU and *before* the shuffle (as in RepDistiller)."""

    def __init__(self, in_channels: int, split_ratio: float = 0.5) -> None:
        super().__init__()
        self.split_ratio = split_ratio
        channels = int(in_channels * split_ratio)
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1, groups=channels, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        split = int(x.size(1) * self.split_ratio)
        kept, branch = x[:, :split], x[:, split:]
        out = F.relu(self.bn1(self.conv1(branch)))
        out = self.bn2(self.conv2(out))
        branch_preact = self.bn3(self.conv3(out))
        out = torch.cat([kept, F.relu(branch_preact)], 1)
        preact = torch.cat([kept, branch_preact], 1)
        return channel_shuffle(out, 2), preact


class DownBlock(nn.Module):
    """Stride-2 unit: left dw3x3(s2)-BN, 1x1-BN-ReLU; right 1x1-BN-ReLU, dw3x3(s2)-BN,
    1x1-BN-ReLU; concat; shuffle. Returns (output, output): it never ends a stage."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid_channels = out_channels // 2
        # left branch
        self.conv1 = nn.Conv2d(
            in_channels, in_channels, kernel_size=3, stride=2, padding=1, groups=in_channels, bias=False
        )
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_channels)
        # right branch
        self.conv3 = nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid_channels)
        self.conv4 = nn.Conv2d(
            mid_channels, mid_channels, kernel_size=3, stride=2, padding=1, groups=mid_channels, bias=False
        )
        self.bn4 = nn.BatchNorm2d(mid_channels)
        self.conv5 = nn.Conv2d(mid_channels, mid_channels, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        left = self.bn1(self.conv1(x))
        left = F.relu(self.bn2(self.conv2(left)))
        right = F.relu(self.bn3(self.conv3(x)))
        right = self.bn4(self.conv4(right))
        right = F.relu(self.bn5(self.conv5(right)))
        out = channel_shuffle(torch.cat([left, right], 1), 2)
        return out, out


class ShuffleNetV2(nn.Module):
    """1x1 stem (24 ch, 32 px), three stages (DownBlock + BasicBlocks; 16/8/4 px), 1x1 conv-BN-ReLU,
    4x4 avg pool, ``linear`` head."""

    def __init__(self, net_size: float = 1.0, num_classes: int = 100) -> None:
        super().__init__()
        out_channels, num_blocks = CONFIGS[net_size]
        self.conv1 = nn.Conv2d(3, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.in_channels = 24
        self.layer1 = self._make_layer(out_channels[0], num_blocks[0])
        self.layer2 = self._make_layer(out_channels[1], num_blocks[1])
        self.layer3 = self._make_layer(out_channels[2], num_blocks[2])
        self.conv2 = nn.Conv2d(out_channels[2], out_channels[3], kernel_size=1, stride=1, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.linear = nn.Linear(out_channels[3], num_classes)

    def _make_layer(self, out_channels: int, num_blocks: int) -> PreactStage:
        blocks: list[nn.Module] = [DownBlock(self.in_channels, out_channels)]
        blocks += [BasicBlock(out_channels) for _ in range(num_blocks)]
        self.in_channels = out_channels
        return PreactStage(*blocks)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.bn1, self.layer1, self.layer2, self.layer3])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """Last BN of each stage's last block (RepDistiller raises NotImplementedError here)."""
        return [self.layer1[-1].bn3, self.layer2[-1].bn3, self.layer3[-1].bn3]

    def map_before_pool(self, last_stage: torch.Tensor) -> torch.Tensor:
        """The map ``forward`` average-pools into ``linear`` (1x1 conv-BN-ReLU of feats[-2]),
        without updating BatchNorm statistics."""
        return F.relu(batch_norm_without_update(self.bn2, self.conv2(last_stage)))

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
        out = F.relu(self.bn2(self.conv2(out)))
        pooled = F.avg_pool2d(out, 4).flatten(1)
        logits = self.linear(pooled)
        if not is_feat:
            return logits
        return [stem, *(preacts if preact else outputs), pooled], logits


def ShuffleV2(num_classes: int = 100) -> ShuffleNetV2:
    return ShuffleNetV2(net_size=1.0, num_classes=num_classes)
