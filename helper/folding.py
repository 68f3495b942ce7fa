"""BatchNorm folding for a frozen network's inference forward (Ioffe & Szegedy 2015 for BatchNorm;
folding as in Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference", CVPR 2018, section 3.2).

In eval mode ``bn(conv(x))`` is ``conv'(x)`` with ``W' = W * s`` and ``b' = (b - mean) * s + beta``,
``s = gamma / sqrt(var + eps)`` per output channel: one pass over the activations fewer, the same
values up to float rounding. Only a BatchNorm that is the sole consumer of a convolution's output
is folded: the pairs are found by running the network once with hooks (each module called once,
the BatchNorm's input *is* the convolution's output, that output is not returned as a feature),
and the fold is then checked in float64 against the unfolded network with randomised statistics
in every call mode (``is_feat`` / ``preact``), so a pair whose convolution output is also read
elsewhere is left unfolded. Pre-ReLU features (``preact=True``) are unchanged: the folded
convolution produces exactly what the BatchNorm produced.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

CALL_MODES = ({"is_feat": True, "preact": False}, {"is_feat": True, "preact": True}, {})
CHECK_TOLERANCE = 1e-9  # float64 relative error allowed by the self-check (folding is exact up to rounding)


def _outputs(model: nn.Module, images: Tensor, mode: dict[str, bool]) -> list[Tensor]:
    """Every tensor ``model(images, **mode)`` returns (features and logits), flattened into a list."""
    result = model(images, **mode)
    if isinstance(result, Tensor):
        return [result]
    features, logits = result
    return [*features, logits]


def _accepts_feature_modes(model: nn.Module, images: Tensor) -> bool:
    try:
        _outputs(model, images, CALL_MODES[1])
        return True
    except TypeError:  # a plain classifier without is_feat/preact
        return False


def _candidate_pairs(model: nn.Module, images: Tensor, modes: tuple[dict[str, bool], ...]) -> list[tuple[str, str]]:
    """(conv name, bn name) pairs where the BatchNorm's only observed input is the conv's output."""
    names = {module: name for name, module in model.named_modules()}
    calls: dict[str, int] = {}
    conv_of_output: dict[int, tuple[str, Tensor, int]] = {}
    bn_input: dict[str, list[Any]] = {}

    def after_conv(module: nn.Module, _: Any, output: Tensor) -> None:
        calls[names[module]] = calls.get(names[module], 0) + 1
        # keep the tensor alive (ids stay unique) and its version (an in-place op in between disqualifies)
        conv_of_output[id(output)] = (names[module], output, output._version)

    def before_bn(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        calls[names[module]] = calls.get(names[module], 0) + 1
        producer = conv_of_output.get(id(inputs[0]))
        direct = producer is not None and producer[1] is inputs[0] and producer[2] == inputs[0]._version
        bn_input.setdefault(names[module], []).append(producer[0] if direct else None)

    handles = [module.register_forward_hook(after_conv) for module in names if isinstance(module, nn.Conv2d)]
    handles += [module.register_forward_pre_hook(before_bn) for module in names
                if type(module) is nn.BatchNorm2d and module.track_running_stats]
    returned: list[Tensor] = []  # kept alive, like the conv outputs, so that ids are never reused
    try:
        with torch.no_grad():
            for mode in modes:
                returned += _outputs(model, images, mode)
    finally:
        for handle in handles:
            handle.remove()
    returned_ids = {id(tensor) for tensor in returned}
    feature_convs = {name for key, (name, _, _) in conv_of_output.items() if key in returned_ids}
    pairs = []
    for bn_name, producers in bn_input.items():
        conv_name = producers[0]
        if conv_name is None or any(p != conv_name for p in producers) or conv_name in feature_convs:
            continue
        if calls[bn_name] == calls[conv_name] == len(modes):  # one call per forward, in every mode
            pairs.append((conv_name, bn_name))
    return pairs


@torch.no_grad()
def _fold_pair(model: nn.Module, conv_name: str, bn_name: str) -> None:
    """Fold BatchNorm ``bn_name`` into Conv2d ``conv_name`` (in float64) and replace it by Identity."""
    conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
    scale = bn.running_var.double().add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    bias = conv.bias.double() * scale + shift if conv.bias is not None else shift
    conv.weight.copy_(conv.weight.double() * scale.view(-1, *([1] * (conv.weight.dim() - 1))))
    conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
    model.set_submodule(bn_name, nn.Identity())


def _randomise_statistics(model: nn.Module, generator: torch.Generator) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters (a fresh network has the identity)."""
    for module in model.modules():
        if type(module) is nn.BatchNorm2d and module.track_running_stats:
            size = module.num_features
            module.running_mean.copy_(torch.randn(size, generator=generator, dtype=torch.float64) * 0.5)
            module.running_var.copy_(torch.rand(size, generator=generator, dtype=torch.float64) * 1.5 + 0.5)
            if module.weight is not None:
                module.weight.data.copy_(torch.rand(size, generator=generator, dtype=torch.float64) + 0.5)
                module.bias.data.copy_(torch.randn(size, generator=generator, dtype=torch.float64) * 0.5)


def _relative_error(folded: list[Tensor], reference: list[Tensor]) -> float:
    return max(float((a - b).abs().max() / b.abs().max().clamp(min=1e-30)) for a, b in zip(folded, reference))


def _pairs_that_hold(model: nn.Module, pairs: list[tuple[str, str]], images: Tensor,
                     modes: tuple[dict[str, bool], ...]) -> list[tuple[str, str]]:
    """The pairs whose folding leaves every output of every mode unchanged (float64, random statistics);
    all at once when they all hold, else one by one."""
    probe = copy.deepcopy(model).double()
    _randomise_statistics(probe, torch.Generator().manual_seed(0))
    images = images.double()
    with torch.no_grad():
        reference = [_outputs(probe, images, mode) for mode in modes]

    def holds(subset: list[tuple[str, str]]) -> bool:
        folded = copy.deepcopy(probe)
        for conv_name, bn_name in subset:
            _fold_pair(folded, conv_name, bn_name)
        with torch.no_grad():
            return all(_relative_error(_outputs(folded, images, mode), expected) <= CHECK_TOLERANCE
                       for mode, expected in zip(modes, reference))

    if not pairs or holds(pairs):
        return pairs
    return [pair for pair in pairs if holds([pair])]


def fold_batchnorm(model: nn.Module, image_size: int = 32) -> tuple[nn.Module, int]:
    """An eval-mode, gradient-free copy of ``model`` with every foldable BatchNorm2d folded into the
    Conv2d before it, and the number folded. ``model`` itself is not changed (its state_dict, loaded
    strictly, stays the reference). Outputs (features of every mode, logits) equal the original's up
    to float rounding. Runs on a CPU copy; images (2, 3, image_size, image_size)."""
    folded = copy.deepcopy(model).cpu().eval().requires_grad_(False)
    images = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batch-2 probes: one thread is fastest, and immune to a busy machine
    try:
        modes = CALL_MODES if _accepts_feature_modes(folded, images) else ({},)
        pairs = _pairs_that_hold(folded, _candidate_pairs(folded, images, modes), images, modes)
    finally:
        torch.set_num_threads(threads)
    for conv_name, bn_name in pairs:
        _fold_pair(folded, conv_name, bn_name)
    return folded, len(pairs)


def batchnorm_layers(model: nn.Module) -> Iterator[nn.Module]:
    """The BatchNorm2d modules still in ``model``."""
    return (module for module in model.modules() if isinstance(module, nn.BatchNorm2d))
