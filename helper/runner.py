"""Building blocks the three entry scripts share: device/seed set-up, data, optimizer, and the run."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Iterable

import torch

from helper.checkpoint import options_to_dict
from helper.loop import FitConfig, FitResult, Task, fit
from helper.options import check_batch_size
from helper.util import configure_threads, resolve_device, set_seed


def setup(opt: argparse.Namespace) -> torch.device:
    """Pick the device, seed every RNG and size the CPU thread pool."""
    device = resolve_device(opt.device)
    set_seed(opt.seed)
    configure_threads(device)
    return device


def build_data(opt: argparse.Namespace, device: torch.device) -> tuple[Any, Any, Any]:
    """Load ``opt.dataset`` from ``opt.data_folder`` and return (data, train_loader, test_loader)."""
    from dataset import load_dataset, make_loaders

    download = os.environ.get("DISTILLERS_OFFLINE", "0") != "1"
    data = load_dataset(opt.dataset, opt.data_folder, download=download)
    check_batch_size(opt.batch_size, int(data.train_labels.shape[0]), opt.dataset)
    train_loader, test_loader = make_loaders(data, opt.batch_size, device, loader=opt.loader,
                                             num_workers=opt.num_workers, seed=opt.seed,
                                             channels_last=opt.channels_last)
    return data, train_loader, test_loader


def prepare_model(model: torch.nn.Module, opt: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    """Move ``model`` to ``device`` in the requested memory format, compiled in place with --compile
    (``Module.compile`` keeps the state_dict keys unchanged, so checkpoints stay portable)."""
    model.to(device, memory_format=torch.channels_last if opt.channels_last else torch.contiguous_format)
    if opt.compile:
        model.compile()
    return model


def make_optimizer(params: Iterable[torch.nn.Parameter] | list[dict[str, Any]], opt: argparse.Namespace,
                   device: torch.device, learning_rate: float | None = None) -> torch.optim.SGD:
    """SGD with momentum and weight decay (fused kernels on CUDA, foreach elsewhere)."""
    kwargs: dict[str, Any] = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.SGD(params, lr=learning_rate or opt.learning_rate, momentum=opt.momentum,
                           weight_decay=opt.weight_decay, **kwargs)


def run_stage(task: Task, optimizer: torch.optim.Optimizer, train_loader: Any, test_loader: Any,
              opt: argparse.Namespace, run_dir: Path, tb_dir: Path | None, model_name: str, arch: str,
              resume: dict[str, Any] | None, *, stage: str = "main", epochs: int | None = None,
              learning_rate: float | None = None, validate: bool = True,
              extra: dict[str, Any] | None = None) -> FitResult:
    """Run one training stage of a run through the shared loop with the run's flags."""
    config = FitConfig(
        epochs=epochs if epochs is not None else opt.epochs,
        learning_rate=learning_rate if learning_rate is not None else opt.learning_rate,
        lr_decay_epochs=opt.lr_decay_epochs_list if stage == "main" else [],
        lr_decay_rate=opt.lr_decay_rate, run_dir=run_dir, tb_dir=tb_dir, model_name=model_name,
        checkpoint_extra={"arch": arch, "opt": options_to_dict(opt), **(extra or {})},
        print_freq=opt.print_freq, tb_freq=opt.tb_freq, save_freq=opt.save_freq, stage=stage,
        validate_each_epoch=validate, amp=opt.amp, progress=not opt.no_progress)
    return fit(task, optimizer, train_loader, test_loader, config, resume)
