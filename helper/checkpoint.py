"""Atomic checkpoint writes and safe (``weights_only=True``) loading with clear errors."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn

from helper.errors import UserError
from helper.util import atomic_write


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically and durably (temp file in the same folder, fsync,
    ``os.replace``, fsync of the folder; ``helper.util.atomic_write``): a reader, or a crash at any
    moment, sees either the previous complete file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda handle: torch.save(state, handle), durable=True)


def load_checkpoint(path: str | Path, what: str = "checkpoint", missing_hint: str = "",
                    mmap: bool = False, damaged_hint: str | None = None) -> dict[str, Any]:
    """Load a checkpoint on the CPU with ``weights_only=True``; a bare state_dict (torchvision's
    files) comes back as ``{'model': state_dict}``. ``missing_hint`` ends the message for a missing
    file; ``damaged_hint`` replaces the default advice for a damaged one. ``mmap=True`` maps the file
    instead of reading it (fast when only the metadata is needed;
    legacy pre-zip files are read in full).

    Older RepDistiller-style files that pickled an ``argparse.Namespace`` load through an
    explicit allowlist of that one type; nothing else outside tensors/containers is accepted.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"The {what} file '{path}' does not exist. Check the path (it is relative to the "
                        f"current folder '{Path.cwd()}'). {missing_hint}".rstrip())
    if path.is_dir():
        candidates = sorted(p.name for p in path.glob("*.pth"))
        hint = f" It contains: {', '.join(candidates)}." if candidates else " It contains no .pth files."
        raise UserError(f"The {what} path '{path}' is a folder, not a file.{hint} Pass the .pth file itself, "
                        "e.g. save/models/resnet32x4_vanilla/ckpt_epoch_240.pth.")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            state = _torch_load(path, mmap)
    except Exception as error:  # torch.load raises many types for damaged files; all mean "unreadable"
        advice = damaged_hint or ("Re-download or re-create it (a run's checkpoint: rerun the run with --resume "
                                  "auto from its last good checkpoint, or train it again).")
        raise UserError(f"Could not read the {what} '{path}': the file is damaged (truncated, corrupt or not a "
                        f"PyTorch checkpoint; {type(error).__name__}: {first_sentence(str(error))}) {advice}") from None
    if (isinstance(state, dict) and state and "model" not in state and
            all(isinstance(value, torch.Tensor) for value in state.values())):
        state = {"model": state}  # a bare state_dict, as torchvision publishes its ImageNet weights
    if not isinstance(state, dict) or "model" not in state:
        keys = list(state)[:8] if isinstance(state, dict) else type(state).__name__
        raise UserError(f"The {what} '{path}' is not a distillers/RepDistiller checkpoint: expected a dict with "
                        f"a 'model' state_dict, found {keys}.")
    return state


def first_sentence(text: str, limit: int = 300) -> str:
    """The first sentence of a library's error message (whole, not cut mid-word), without its
    trailing period; the first line when no sentence ends within ``limit`` characters."""
    line = (text.strip().splitlines() or [""])[0].strip()
    end = line.find(". ")
    sentence = line[:end] if 0 <= end < limit else line
    return sentence.rstrip(".")


def _torch_load(path: Path, mmap: bool) -> Any:
    if mmap:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (pre-zip) files cannot be memory-mapped
            pass
    return torch.load(path, map_location="cpu", weights_only=True)


def options_to_dict(opt: argparse.Namespace | dict[str, Any]) -> dict[str, Any]:
    """Options as a plain dict of python scalars/lists so the checkpoint loads with weights_only=True."""
    items = vars(opt) if isinstance(opt, argparse.Namespace) else dict(opt)
    plain: dict[str, Any] = {}
    for key, value in items.items():
        if isinstance(value, (str, int, float, bool, type(None))):
            plain[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float, bool)) for v in value):
            plain[key] = list(value)
        else:
            plain[key] = str(value)
    return plain


def load_weights(model: nn.Module, state: dict[str, Any], path: str | Path, arch: str, flag: str) -> None:
    """Load ``state['model']`` into ``model`` with ``strict=True``; on mismatch, say what the file holds."""
    from models import get_classifier, identify_arch

    weights = state["model"]
    if any(key.startswith("module.") for key in weights):  # saved from DataParallel/DDP
        weights = {key.removeprefix("module."): value for key, value in weights.items()}
    try:
        model.load_state_dict(weights, strict=True)
        return
    except RuntimeError as error:
        detail = " ".join(str(error).splitlines()[1:2]).strip()[:160]
    found = identify_arch(weights)
    if found is not None and found[0] == arch:
        expected = get_classifier(model).out_features
        raise UserError(f"The checkpoint {flag} '{path}' is a '{arch}' with {found[1]} output classes, but the "
                        f"dataset needs {expected}. Use the --dataset the model was trained on, or a checkpoint "
                        "trained on this dataset.")
    holds = (f"a '{found[0]}' model ({found[1]} classes)" if found else
        f"a '{state['arch']}' model" if isinstance(state.get("arch"), str) else "weights of an unknown architecture")
    raise UserError(f"The checkpoint {flag} '{path}' holds {holds}, which does not match the architecture "
                    f"'{arch}' it is being loaded into ({detail}). Pass the matching architecture name, or the "
                    f"checkpoint of a '{arch}' model.")


def checkpoint_arch(path: str | Path, state: dict[str, Any], role: str = "teacher") -> str:
    """The architecture of a checkpoint: the 'arch' it records, else the longest model name prefixing its
    folder name (``resnet32x4_vanilla`` -> ``resnet32x4``), else the torchvision architecture whose keys
    and shapes the weights have (torchvision's files). ``role`` names the model in the error message."""
    from models import all_model_dict, identify_arch, imagenet_model_dict

    recorded = state.get("arch")
    if isinstance(recorded, str) and recorded in all_model_dict:
        return recorded
    folder = Path(path).resolve().parent.name
    matches = [name for name in all_model_dict if folder.startswith(name)]
    if matches:
        return max(matches, key=len)
    found = identify_arch(state["model"], imagenet_model_dict)
    if found is not None:
        return found[0]
    raise UserError(f"Cannot tell the {role}'s architecture: '{path}' records none, and its folder name "
                    f"'{folder}' does not start with a known model ({', '.join(all_model_dict)}). Put it in a folder "
                    "named like 'resnet32x4_vanilla', or re-save it with an 'arch' entry.")


def classifier_classes(state: dict[str, Any], arch: str) -> int | None:
    """The number of output classes of a checkpoint's ``arch`` classifier (None when the weights have
    no such layer)."""
    from models import classifier_key

    weight = state["model"].get(f"{classifier_key(arch)}.weight")
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) and weight.ndim == 2 else None
