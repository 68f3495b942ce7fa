"""CIFAR-size architectures, the ``model_dict`` registry and classifier-head helpers.

Every model is built as ``model_dict[name](num_classes=100)`` and called as
``model(x, is_feat=False, preact=False)``: logits (B, num_classes), or with ``is_feat``
``(feats, logits)`` where feats = [stem output, each stage output (pre-ReLU with ``preact``),
pooled vector]. Parameter and buffer names equal RepDistiller's, so its published
``ckpt_epoch_240.pth`` files load with ``strict=True``.

``imagenet_model_dict`` holds the torchvision ImageNet architectures with the same interface
(``tv_resnet18`` ...); ``all_model_dict`` is both, for the scripts' --model/--model_s/teacher lookup.

To add an architecture: write its module here (copy the closest family), then add one line to
``model_dict`` (CIFAR size) or ``imagenet_model_dict``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from torch import nn

from .mobilenetv2 import mobile_half
from .resnet import resnet8, resnet8x4, resnet14, resnet20, resnet32, resnet32x4, resnet44, resnet56, resnet110
from .resnetv2 import ResNet50
from .shufflenetv1 import ShuffleV1
from .shufflenetv2 import ShuffleV2
from .util import ConvReg, Connector, Embed, LinearEmbed, Normalize, Paraphraser, Translator, pool_to_smaller
from .vgg import vgg8, vgg11, vgg13, vgg16, vgg19
from .wrn import wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2

__all__ = [
    "model_dict",
    "imagenet_model_dict",
    "all_model_dict",
    "get_classifier",
    "set_classifier",
    "classifier_key",
    "identify_arch",
    "map_before_pool",
    "ConvReg",
    "Connector",
    "Embed",
    "LinearEmbed",
    "Normalize",
    "Paraphraser",
    "Translator",
]

model_dict: dict[str, Callable[..., nn.Module]] = {
    "resnet8": resnet8,
    "resnet14": resnet14,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "resnet8x4": resnet8x4,
    "resnet32x4": resnet32x4,
    "ResNet50": ResNet50,
    "wrn_16_1": wrn_16_1,
    "wrn_16_2": wrn_16_2,
    "wrn_40_1": wrn_40_1,
    "wrn_40_2": wrn_40_2,
    "vgg8": vgg8,
    "vgg11": vgg11,
    "vgg13": vgg13,
    "vgg16": vgg16,
    "vgg19": vgg19,
    "MobileNetV2": mobile_half,
    "ShuffleV1": ShuffleV1,
    "ShuffleV2": ShuffleV2,
}



def _torchvision_model(name: str) -> Callable[..., nn.Module]:
    """``models.torchvision_models.<name>``, imported on first use: importing torchvision takes ~3 s
    (it loads torch._dynamo), which every CIFAR run would otherwise pay at start-up."""

    def build(num_classes: int = 1000) -> nn.Module:
        from . import torchvision_models

        return getattr(torchvision_models, name)(num_classes=num_classes)

    build.__name__ = build.__qualname__ = name
    return build


imagenet_model_dict: dict[str, Callable[..., nn.Module]] = {
    name: _torchvision_model(name) for name in ("tv_resnet18", "tv_resnet34", "tv_resnet50", "tv_mobilenet_v2")
}

all_model_dict: dict[str, Callable[..., nn.Module]] = {**model_dict, **imagenet_model_dict}

# Attribute names the architectures use for their final layer (MobileNetV2 wraps it in a Sequential).
_HEAD_NAMES = ("fc", "linear", "classifier")


def _find_classifier(model: nn.Module) -> tuple[nn.Module, str]:
    """(module holding the final nn.Linear, its attribute name in that module)."""
    for name in _HEAD_NAMES:
        head = getattr(model, name, None)
        if isinstance(head, nn.Linear):
            return model, name
        if isinstance(head, nn.Sequential) and len(head) > 0 and isinstance(head[-1], nn.Linear):
            return head, str(len(head) - 1)
    raise TypeError(
        f"{type(model).__name__} has no final nn.Linear named {' / '.join(_HEAD_NAMES)} "
        "(nor a Sequential ending in one)"
    )


def get_classifier(model: nn.Module) -> nn.Linear:
    """The final linear layer of any ``model_dict`` architecture."""
    parent, name = _find_classifier(model)
    return getattr(parent, name)


def set_classifier(model: nn.Module, layer: nn.Linear) -> None:
    """Replace the final linear layer in place (e.g. a new head for transfer learning).

    The new layer's ``in_features`` must equal the pooled feature size of the model.
    """
    parent, name = _find_classifier(model)
    old = getattr(parent, name)
    if layer.in_features != old.in_features:
        raise ValueError(
            f"new classifier takes {layer.in_features} features but {type(model).__name__} "
            f"produces {old.in_features}"
        )
    setattr(parent, name, layer)


def map_before_pool(model: nn.Module, feats: list[torch.Tensor]) -> torch.Tensor:
    """The feature map (B, C, H, W) that ``model`` average-pools into its classifier, for the batch
    whose ``is_feat`` features (``preact=False``) are ``feats``.

    That is feats[-2] itself, except for WRN (final BN-ReLU), MobileNetV2 (1x1 conv to 1280) and
    ShuffleV2 (1x1 conv-BN-ReLU), whose layers after the last stage are applied to feats[-2] again
    (same output and gradients, BatchNorm statistics not updated twice). The classifier applied
    to it as a 1x1 convolution gives the class activation maps (Zhou et al., CVPR 2016).
    """
    head = getattr(model, "map_before_pool", None)
    return head(feats[-2]) if callable(head) else feats[-2]


def classifier_key(arch: str) -> str:
    """State-dict prefix of ``arch``'s final linear layer, e.g. 'fc', 'linear', 'classifier.0'."""
    with torch.device("meta"):
        model = all_model_dict[arch](num_classes=2)
    head = get_classifier(model)
    return next(name for name, module in model.named_modules() if module is head)


def identify_arch(weights: Mapping[str, torch.Tensor],
                  candidates: Mapping[str, Callable[..., nn.Module]] | None = None) -> tuple[str, int] | None:
    """(arch, num_classes) of the architecture among ``candidates`` (default: all) whose state-dict keys
    and shapes equal ``weights`` (any number of classes), or None. Models are built on the meta device."""
    candidates = all_model_dict if candidates is None else candidates
    for arch in candidates:
        head = weights.get(f"{classifier_key(arch)}.weight")
        if head is None or head.ndim != 2:
            continue
        with torch.device("meta"):
            reference = candidates[arch](num_classes=int(head.shape[0])).state_dict()
        if reference.keys() == weights.keys() and all(
                tuple(reference[key].shape) == tuple(weights[key].shape) for key in reference):
            return arch, int(head.shape[0])
    return None
