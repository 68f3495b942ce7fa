"""Checkpoints -> models -> batched outputs (logits, penultimate embeddings, feature maps) on a test split."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dataset import CLASS_COUNTS
from dataset.loaders import normalize
from helper.checkpoint import checkpoint_arch, classifier_classes, load_checkpoint, load_weights
from helper.errors import UserError
from helper.provenance import check_source_fits, checkpoint_source
from helper.run_folder import best_checkpoint, last_checkpoint, parse_folder_name
from models import all_model_dict



@dataclass
class LoadedModel:
    """A trained network in eval mode, with where it came from and a short label for figures."""

    label: str
    arch: str
    path: Path
    model: nn.Module


@dataclass
class Outputs:
    """What a model computes on a set of test images (float32, CPU)."""

    logits: torch.Tensor  # (n, num_classes)
    embeddings: torch.Tensor  # (n, d): feats[-1], the penultimate (pooled) representation
    feature_maps: list[torch.Tensor] | None = None  # every entry of feats, each (n, ...)


def resolve_checkpoint(path: str | Path, flag: str) -> Path:
    """A checkpoint file as given, or for a run folder its ``<model>_best.pth``, else its ``<model>_last.pth``."""
    path = Path(path)
    if not path.is_dir():
        return path
    for checkpoint in (best_checkpoint, last_checkpoint):
        found = [checkpoint(path, name) for name in all_model_dict]
        found = [file for file in found if file.is_file()]
        if found:
            return found[0]
    contents = ", ".join(sorted(p.name for p in path.glob("*.pth"))) or "no .pth files"
    raise UserError(f"{flag} '{path}' is a folder without a <model>_best.pth or <model>_last.pth (it holds "
                    f"{contents}). Pass a run folder written by train_teacher.py/train_student.py, or the .pth file "
                    "itself.")


def run_label(path: Path, arch: str) -> str:
    """Short figure label: 'kd r=0.1 a=0.9 b=0' for a train_student run folder, else the folder name."""
    folder = path.parent.name
    name = parse_folder_name("student", folder)
    if not name:
        return folder or arch
    return f"{name['distill']} r={name['gamma']} a={name['alpha']} b={name['beta']}"


def run_trial(path: Path) -> str | None:
    """The --trial of a train_student run folder, else None."""
    return parse_folder_name("student", path.parent.name).get("trial")


@dataclass
class Checkpoint:
    """A checkpoint read from disk, with the architecture it was trained as."""

    path: Path
    state: dict[str, Any]
    arch: str
    flag: str
    role: str


def open_checkpoint(path: str | Path, flag: str, role: str, dataset: str | None = None) -> Checkpoint:
    """Read a checkpoint (file or run folder) and find its architecture as train_student.py does;
    with ``dataset``, refuse (before any data is loaded) one that records another dataset or has
    another number of classes."""
    file = resolve_checkpoint(path, flag)
    state = load_checkpoint(file, f"{role} checkpoint ({flag})")
    arch = checkpoint_arch(str(file), state, role)
    if dataset is not None:
        source = checkpoint_source(file, state, arch, classifier_classes(state, arch))
        check_source_fits(source, dataset, CLASS_COUNTS.get(dataset), flag, role)
    return Checkpoint(file, state, arch, flag, role)


def build_model(checkpoint: Checkpoint, num_classes: int, device: torch.device) -> LoadedModel:
    """The checkpoint's architecture for ``num_classes`` classes with its weights loaded strictly, in eval mode;
    weights that do not fit raise a UserError naming what the file holds."""
    model = all_model_dict[checkpoint.arch](num_classes=num_classes)
    load_weights(model, checkpoint.state, checkpoint.path, checkpoint.arch, checkpoint.flag)
    model.eval().requires_grad_(False)
    label = "teacher" if checkpoint.role == "teacher" else run_label(checkpoint.path, checkpoint.arch)
    return LoadedModel(label, checkpoint.arch, checkpoint.path, model.to(device))


def extract(model: nn.Module, images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
            device: torch.device, batch_size: int = 256, feature_map_indices: torch.Tensor | None = None) -> Outputs:
    """Run ``model(x, is_feat=True)`` over uint8 (n, 3, H, W) ``images`` in batches under inference_mode,
    normalised as in validation. Logits and embeddings of every image, and every feature map of the images
    at the sorted ``feature_map_indices`` (none when None), come back on the CPU in float32."""
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    logits, embeddings, maps = [], [], []
    model.eval()
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            batch = normalize(images[start:start + batch_size].to(device), mean_t, std_t)
            feats, batch_logits = model(batch, is_feat=True)
            logits.append(batch_logits.float().cpu())
            embeddings.append(feats[-1].flatten(1).float().cpu())
            if feature_map_indices is not None:
                offsets = feature_map_indices - start
                rows = offsets[(offsets >= 0) & (offsets < len(batch))].to(device)
                maps.append([feat.index_select(0, rows).float().cpu() for feat in feats])
    feature_maps = [torch.cat(layer) for layer in zip(*maps)] if feature_map_indices is not None else None
    return Outputs(torch.cat(logits), torch.cat(embeddings), feature_maps)
