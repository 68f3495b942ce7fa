"""ImageNet architectures: torchvision's ResNet-18/34/50 and MobileNet-V2 with the feature-list interface.

Each class subclasses the torchvision model, so parameter and buffer names equal torchvision's and
its ``resnet34-*.pth`` style state_dict files load with ``strict=True``. ``model(x, is_feat=True,
preact=False)`` returns ``(feats, logits)`` with feats = [stem (after ReLU, before max-pool), the
four stage outputs at strides 4, 8, 16, 32, pooled vector], as the CIFAR models do.

preact: ResNet stage outputs are taken before the last block's ReLU (exact, the block is
re-evaluated step by step). MobileNet-V2 has no ReLU after its inverted-residual blocks (linear
bottlenecks), so stages 1-3 are returned as they are; the last stage (ending in the 1x1 conv to
1280 channels) is taken before its ReLU6. ReLU6 also clips at 6, so AB's boundary at 0 is an
approximation there. The stem is always taken after its activation, as in the CIFAR models.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import mobilenetv2 as tv_mobilenetv2
from torchvision.models import resnet as tv_resnet

Output = Tensor | tuple[list[Tensor], Tensor]


def _block_with_preact(block: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """A torchvision BasicBlock/Bottleneck evaluated step by step: (output, output before the final ReLU)."""
    out = block.relu(block.bn1(block.conv1(x)))
    out = block.bn2(block.conv2(out))
    if isinstance(block, tv_resnet.Bottleneck):
        out = block.bn3(block.conv3(block.relu(out)))
    shortcut = x if block.downsample is None else block.downsample(x)
    preact = out + shortcut
    return F.relu(preact), preact


class TVResNet(tv_resnet.ResNet):
    """torchvision ResNet (He et al. 2016) returning the stem and stage features on request."""

    def _stage(self, layer: nn.Sequential, x: Tensor) -> tuple[Tensor, Tensor]:
        for block in layer[:-1]:
            x = block(x)
        return _block_with_preact(layer[-1], x)

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> Output:  # type: ignore[override]
        x = self.relu(self.bn1(self.conv1(x)))
        stem = x
        x = self.maxpool(x)
        outputs, preacts = [], []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x, stage_preact = self._stage(layer, x)
            outputs.append(x)
            preacts.append(stage_preact)
        pooled = torch.flatten(self.avgpool(x), 1)
        logits = self.fc(pooled)
        if not is_feat:
            return logits
        return [stem, *(preacts if preact else outputs), pooled], logits

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.bn1, self.layer1, self.layer2, self.layer3, self.layer4])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        last = [layer[-1] for layer in (self.layer1, self.layer2, self.layer3, self.layer4)]
        return [block.bn3 if isinstance(block, tv_resnet.Bottleneck) else block.bn2 for block in last]


# MobileNet-V2 features[i] ranges ending at strides 2, 4, 8, 16, 32
_MOBILENET_STAGES = ((0, 1), (1, 4), (4, 7), (7, 14), (14, 19))


def _conv_norm_preact(module: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """A Conv2dNormActivation (conv, BN, ReLU6): (output, output before the ReLU6)."""
    preact = module[1](module[0](x))
    return F.relu6(preact), preact


class TVMobileNetV2(tv_mobilenetv2.MobileNetV2):
    """torchvision MobileNet-V2 (Sandler et al. 2018) returning the stem and four stage features."""

    def _stage(self, start: int, stop: int, x: Tensor) -> tuple[Tensor, Tensor]:
        for block in self.features[start:stop - 1]:
            x = block(x)
        last = self.features[stop - 1]
        if isinstance(last, tv_mobilenetv2.InvertedResidual):  # linear bottleneck: no activation to skip
            x = last(x)
            return x, x
        return _conv_norm_preact(last, x)

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> Output:  # type: ignore[override]
        outputs, preacts = [], []
        for start, stop in _MOBILENET_STAGES:
            x, stage_preact = self._stage(start, stop, x)
            outputs.append(x)
            preacts.append(stage_preact)
        pooled = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        logits = self.classifier(pooled)
        if not is_feat:
            return logits
        feats = preacts[1:] if preact else outputs[1:]
        return [outputs[0], *feats, pooled], logits

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.features])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        norms = []
        for _, stop in _MOBILENET_STAGES[1:]:
            last = self.features[stop - 1]
            norms.append(last.conv[-1] if isinstance(last, tv_mobilenetv2.InvertedResidual) else last[1])
        return norms


def tv_resnet18(num_classes: int = 1000) -> TVResNet:
    return TVResNet(tv_resnet.BasicBlock, [2, 2, 2, 2], num_classes=num_classes)


def tv_resnet34(num_classes: int = 1000) -> TVResNet:
    return TVResNet(tv_resnet.BasicBlock, [3, 4, 6, 3], num_classes=num_classes)


def tv_resnet50(num_classes: int = 1000) -> TVResNet:
    return TVResNet(tv_resnet.Bottleneck, [3, 4, 6, 3], num_classes=num_classes)


def tv_mobilenet_v2(num_classes: int = 1000) -> TVMobileNetV2:
    return TVMobileNetV2(num_classes=num_classes)
