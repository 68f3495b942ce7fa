"""Helper modules shared by the distillation methods, plus the residual-stage container.

Constructors, layer order and state-dict keys follow RepDistiller's ``models/util.py`` so that
saved regressors / connectors / paraphrasers keep loading with ``strict=True``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

Shape = Sequence[int]  # (N, C, H, W); a torch.Size works too


def init_fan_out_normal(model: nn.Module) -> None:
    """RepDistiller's VGG/MobileNetV2 init: conv N(0, sqrt(2/fan_out)), BN (1, 0), linear N(0, 0.01)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
            module.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.BatchNorm2d):
            module.weight.data.fill_(1)
            module.bias.data.zero_()
        elif isinstance(module, nn.Linear):
            module.weight.data.normal_(0, 0.01)
            module.bias.data.zero_()


def batch_norm_without_update(norm: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` without touching its running statistics (output and gradients are those of the
    forward pass; under torchrun a SyncBatchNorm in training mode normalises with this process's
    batch statistics here). Calling ``norm`` again instead would change buffers that the forward
    pass saved for backward."""
    if not norm.training:
        return norm(x)
    return F.batch_norm(x, None, None, norm.weight, norm.bias, training=True, eps=norm.eps)


class PreactStage(nn.Sequential):
    """A stage of residual blocks that returns ``(output, preact)`` of its last block.

    Every block inside returns ``(output, preact)``, where ``preact`` is the tensor right
    before the block's final ReLU; the stage chains the outputs and keeps the last preact.
    Subclassing ``nn.Sequential`` keeps state-dict keys as ``layerK.<i>.<param>``.
    """

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        preact = x
        for block in self:
            x, preact = block(x)
        return x, preact


class ConvReg(nn.Module):
    """Convolutional regressor mapping a student map onto a teacher map's shape (FitNets,
    Romero et al. 2015): conv 3x3 s2 when the student is 2x larger, transposed conv 4x4 s2
    when 2x smaller, otherwise a valid conv with kernel (1+Hs-Ht, 1+Ws-Wt); then BN (+ReLU).
    """

    def __init__(self, s_shape: Shape, t_shape: Shape, use_relu: bool = True) -> None:
        super().__init__()
        self.use_relu = use_relu
        _, s_channels, s_height, s_width = s_shape
        _, t_channels, t_height, t_width = t_shape
        if s_height == 2 * t_height:
            self.conv: nn.Module = nn.Conv2d(s_channels, t_channels, kernel_size=3, stride=2, padding=1)
        elif s_height * 2 == t_height:
            self.conv = nn.ConvTranspose2d(s_channels, t_channels, kernel_size=4, stride=2, padding=1)
        elif s_height >= t_height:
            kernel = (1 + s_height - t_height, 1 + s_width - t_width)
            self.conv = nn.Conv2d(s_channels, t_channels, kernel_size=kernel)
        else:
            raise ValueError(
                f"ConvReg cannot map a student map of height {s_height} onto a teacher map of "
                f"height {t_height}: the student must be 2x smaller, 2x larger or at least as large"
            )
        self.bn = nn.BatchNorm2d(t_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return self.relu(x) if self.use_relu else x


class Connector(nn.Module):
    """Per-layer student-to-teacher connectors for Activation Boundaries (Heo et al. 2019):
    identity where channels and height already match, else ``ConvReg`` without ReLU."""

    def __init__(self, s_shapes: Sequence[Shape], t_shapes: Sequence[Shape]) -> None:
        super().__init__()
        if len(s_shapes) != len(t_shapes):
            raise ValueError(f"Connector got {len(s_shapes)} student shapes but {len(t_shapes)} teacher shapes")
        self.s_shapes = s_shapes
        self.t_shapes = t_shapes
        self.connectors = nn.ModuleList(
            nn.Sequential() if s[1] == t[1] and s[2] == t[2] else ConvReg(s, t, use_relu=False)
            for s, t in zip(s_shapes, t_shapes)
        )

    def forward(self, g_s: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [connector(feat) for connector, feat in zip(self.connectors, g_s)]


def _conv_bn_leaky(conv: nn.Module, channels: int, use_bn: bool) -> list[nn.Module]:
    """``conv``, BN (or an empty placeholder, so key indices do not move), LeakyReLU(0.1)."""
    return [conv, nn.BatchNorm2d(channels) if use_bn else nn.Sequential(), nn.LeakyReLU(0.1, inplace=True)]


class Paraphraser(nn.Module):
    """Teacher-side auto-encoder of Factor Transfer (Kim et al. 2018).

    Encoder: three 3x3 convs C->C->kC->kC; decoder: three 3x3 transposed convs kC->kC->C->C;
    each followed by optional BN and LeakyReLU(0.1). Input (B, C, H, W); factor (B, kC, H, W).
    """

    def __init__(self, t_shape: Shape, k: float = 0.5, use_bn: bool = False) -> None:
        super().__init__()
        in_channels = t_shape[1]
        out_channels = int(t_shape[1] * k)
        self.encoder = nn.Sequential(
            *_conv_bn_leaky(nn.Conv2d(in_channels, in_channels, 3, 1, 1), in_channels, use_bn),
            *_conv_bn_leaky(nn.Conv2d(in_channels, out_channels, 3, 1, 1), out_channels, use_bn),
            *_conv_bn_leaky(nn.Conv2d(out_channels, out_channels, 3, 1, 1), out_channels, use_bn),
        )
        self.decoder = nn.Sequential(
            *_conv_bn_leaky(nn.ConvTranspose2d(out_channels, out_channels, 3, 1, 1), out_channels, use_bn),
            *_conv_bn_leaky(nn.ConvTranspose2d(out_channels, in_channels, 3, 1, 1), in_channels, use_bn),
            *_conv_bn_leaky(nn.ConvTranspose2d(in_channels, in_channels, 3, 1, 1), in_channels, use_bn),
        )

    def forward(
        self, f_s: torch.Tensor, is_factor: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        factor = self.encoder(f_s)
        if is_factor:
            return factor
        return factor, self.decoder(factor)


class Translator(nn.Module):
    """Student-side encoder of Factor Transfer (Kim et al. 2018): three 3x3 convs
    Cs->Cs->kCt->kCt, each followed by BN (optional) and LeakyReLU(0.1); returns the factor."""

    def __init__(self, s_shape: Shape, t_shape: Shape, k: float = 0.5, use_bn: bool = True) -> None:
        super().__init__()
        in_channels = s_shape[1]
        out_channels = int(t_shape[1] * k)
        self.encoder = nn.Sequential(
            *_conv_bn_leaky(nn.Conv2d(in_channels, in_channels, 3, 1, 1), in_channels, use_bn),
            *_conv_bn_leaky(nn.Conv2d(in_channels, out_channels, 3, 1, 1), out_channels, use_bn),
            *_conv_bn_leaky(nn.Conv2d(out_channels, out_channels, 3, 1, 1), out_channels, use_bn),
        )

    def forward(self, f_s: torch.Tensor) -> torch.Tensor:
        return self.encoder(f_s)


class Normalize(nn.Module):
    """Divide each row by its L-``power`` norm over dim 1 (no epsilon, as in the reference)."""

    def __init__(self, power: int = 2) -> None:
        super().__init__()
        self.power = power

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(self.power).sum(1, keepdim=True).pow(1.0 / self.power)
        return x.div(norm)


class LinearEmbed(nn.Module):
    """Flatten and project: (B, ...) -> (B, dim_out). Used by CC (Peng et al. 2019)."""

    def __init__(self, dim_in: int = 1024, dim_out: int = 128) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.view(x.shape[0], -1))


class Embed(nn.Module):
    """Flatten, project and L2-normalize rows: (B, ...) -> (B, dim_out) unit vectors
    (embedding head of CRD, Tian et al. 2020)."""

    def __init__(self, dim_in: int = 1024, dim_out: int = 128) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)
        self.l2norm = Normalize(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2norm(self.linear(x.view(x.shape[0], -1)))


def pool_to_smaller(first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive-average-pool the spatially larger of two (B, C, H, W) maps to the other's size.

    This is what RepDistiller does before comparing maps of different resolution (AT, FT, NST,
    VID, FSP). Maps that already match are returned unchanged.
    """
    first_size, second_size = tuple(first.shape[2:]), tuple(second.shape[2:])
    if first_size == second_size:
        return first, second
    if first_size[0] * first_size[1] > second_size[0] * second_size[1]:
        return nn.functional.adaptive_avg_pool2d(first, second_size), second
    return first, nn.functional.adaptive_avg_pool2d(second, first_size)
