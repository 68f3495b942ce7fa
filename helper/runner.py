"""Building blocks the three entry scripts share: device/seed set-up, optimizer (helper/optimizers.py), and the run."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from helper import distributed
from helper.checkpoint import options_to_dict
from helper.loop import FitConfig, FitResult, Task, fit
from helper.options import COMPILE_MIN_STEPS
from helper.run_folder import RunPlan, Stage, discard_lone_record
from helper.runlock import claim_run_folder
from helper.util import configure_threads, resolve_device, set_seed


def setup(opt: argparse.Namespace) -> torch.device:
    """Pick the device (joining the torchrun process group when there is one), seed every RNG
    (the same seed on every rank) and size the CPU thread pool."""
    device = distributed.init_distributed(resolve_device(opt.device))
    set_seed(opt.seed)
    configure_threads(device)
    opt.channels_last = resolve_channels_last(opt.channels_last, device)
    processes = distributed.world_size()
    if processes > 1 and distributed.is_main():
        print(f"torchrun: {processes} processes x --batch_size {opt.batch_size} = global batch "
              f"{processes * opt.batch_size} (backend {torch.distributed.get_backend()}, device {device.type})")
        if lr_factor(opt) == 1.0:
            print(f"warning: --learning_rate {opt.learning_rate:g} is used as is for a {processes}x larger global "
                  f"batch (--lr_scaling none); pass --lr_scaling linear to train with {processes} x "
                  "--learning_rate (Goyal et al., 2017).", file=sys.stderr, flush=True)
    return device


def lr_factor(opt: argparse.Namespace) -> float:
    """The --lr_scaling multiplier of every stage's learning rate (1 in a single process)."""
    return float(distributed.world_size()) if getattr(opt, "lr_scaling", "none") == "linear" else 1.0


def resolve_channels_last(setting: str | bool, device: torch.device) -> bool:
    """--channels_last auto|on|off -> bool. auto: on for CUDA GPUs of compute capability 7.0 or newer
    (NHWC tensor-core convolutions) and for x86 CPUs with AVX2/AVX-512 (oneDNN's NHWC kernels, measured
    1.2-1.3x on a 2-core AVX-512 CPU in fp32), off elsewhere."""
    if isinstance(setting, bool) or setting in ("on", "off"):
        return setting is True or setting == "on"
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (7, 0)
    return device.type == "cpu" and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def resolve_compile(setting: str | bool, device: torch.device, steps: int) -> bool:
    """--compile auto|on|off -> bool. auto: on for runs of at least COMPILE_MIN_STEPS[device type]
    training steps on a CPU or CUDA device (the compile time is then a small share of the run)."""
    if isinstance(setting, bool) or setting in ("on", "off"):
        return setting is True or setting == "on"
    minimum = COMPILE_MIN_STEPS.get(device.type)
    return minimum is not None and steps >= minimum


def resolve_speed_options(opt: argparse.Namespace, device: torch.device, steps: int) -> None:
    """Replace 'auto' in --channels_last/--compile by what it means for this device and run length,
    and say so once when either was 'auto'."""
    compile_setting = opt.compile
    opt.compile = resolve_compile(compile_setting, device, steps)
    if compile_setting == "auto" and distributed.is_main():
        reason = f"{steps:,} training steps, auto compiles from {COMPILE_MIN_STEPS.get(device.type, 0):,}"
        print(f"speed: channels_last {'on' if opt.channels_last else 'off'}, compile "
              f"{'on' if opt.compile else 'off'} ({reason}; --compile on|off, --channels_last on|off to choose)")


_compile_warned = False


def compile_with_fallback(model: torch.nn.Module, on_fallback: Callable[[], None] | None = None) -> torch.nn.Module:
    """``model.compile()`` (torch.compile of its call; state_dict keys unchanged) that falls back to the
    eager model, with one warning per process, when compiling fails (no C++ compiler, an unsupported
    GPU or Python version, a graph break the backend cannot handle, ...), then calls ``on_fallback``.
    An error the eager model raises too is re-raised as it is."""
    # inductor's C++ build for CPU warns that no CUDA runtime exists, which is expected without a GPU
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        compiled = torch.compile(model._call_impl)
    except Exception as error:  # e.g. torch.compile unsupported on this Python
        _warn_compile_failed(error)
        if on_fallback is not None:
            on_fallback()
        return model

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return compiled(*args, **kwargs)
        except Exception as error:
            model._compiled_call_impl = None  # eager from now on
            output = model._call_impl(*args, **kwargs)  # raises if the model itself is broken
            _warn_compile_failed(error)
            if on_fallback is not None:
                on_fallback()
            return output

    model._compiled_call_impl = call  # what Module.compile() sets
    return model


def runs_compiled(model: torch.nn.Module) -> bool:
    """Whether ``model`` is (still) compiled: False before compile_with_fallback and after a fallback."""
    return getattr(model, "_compiled_call_impl", None) is not None


def _warn_compile_failed(error: Exception) -> None:
    global _compile_warned
    if not _compile_warned:
        _compile_warned = True
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        print(f"warning: torch.compile failed ({type(error).__name__}: {first_line}); training continues "
              "without compilation. Pass --compile off to skip the attempt.", file=sys.stderr, flush=True)


def _record_eager(opt: argparse.Namespace) -> None:
    """After a compile fallback, --compile is off: in a corrected speed line, in the flags every later
    checkpoint records, and for whatever reads ``opt.compile`` to report the run's configuration."""
    if opt.compile:
        opt.compile = False
        if distributed.is_main():
            print(f"speed: channels_last {'on' if opt.channels_last else 'off'}, compile off (torch.compile "
                  "failed, the models run eagerly)", flush=True)


def prepare_model(model: torch.nn.Module, opt: argparse.Namespace, device: torch.device,
                  trained: bool = True, compile: bool | None = None) -> torch.nn.Module:
    """Move ``model`` to ``device`` in the requested memory format (a ``trained`` model's BatchNorm
    over all ranks with --sync_bn), compiled in place with --compile unless ``compile`` says otherwise
    (``compile_with_fallback``: state_dict keys unchanged, so checkpoints stay portable)."""
    if trained and getattr(opt, "sync_bn", False):
        model = distributed.convert_sync_batchnorm(model, device)
    model.to(device, memory_format=torch.channels_last if opt.channels_last else torch.contiguous_format)
    if opt.compile if compile is None else compile:
        compile_with_fallback(model, on_fallback=lambda: _record_eager(opt))
    return model


def train_or_describe(opt: argparse.Namespace, plan: RunPlan,
                      train: Callable[[argparse.Namespace, RunPlan], float]) -> float | None:
    """The entry scripts' main: with --print_run_dir print the run folder and its status; otherwise
    claim the folder (one process per run) and ``train(opt, plan)`` into it."""
    if opt.print_run_dir:
        print(plan.describe())
        return None
    with claim_run_folder(plan.run_dir, distributed.is_main()):
        try:
            return train(opt, plan)
        except BaseException:  # failed or stopped before its first checkpoint: leave no folder behind
            if distributed.is_main():
                discard_lone_record(plan.run_dir)
            raise


def run_stage(task: Task, optimizer: torch.optim.Optimizer, train_loader: Any, test_loader: Any,
              opt: argparse.Namespace, run_dir: Path, tb_dir: Path | None, model_name: str, arch: str,
              resume: dict[str, Any] | None, *, stage: Stage = Stage.MAIN, epochs: int | None = None,
              learning_rate: float | None = None, validate: bool = True,
              extra: dict[str, Any] | None = None) -> FitResult:
    """Run one training stage of a run through the shared loop with the run's flags."""
    config = FitConfig(
        epochs=epochs if epochs is not None else opt.epochs,
        learning_rate=(learning_rate if learning_rate is not None else opt.learning_rate) * lr_factor(opt),
        lr_decay_epochs=opt.lr_decay_epochs_list if stage == Stage.MAIN else [],
        lr_decay_rate=opt.lr_decay_rate, run_dir=run_dir, tb_dir=tb_dir, model_name=model_name,
        checkpoint_extra={"arch": arch, "opt": options_to_dict(opt), **(extra or {})},
        print_freq=opt.print_freq, tb_freq=opt.tb_freq, save_freq=opt.save_freq, stage=stage,
        validate_each_epoch=validate, amp=opt.amp, progress=not opt.no_progress)
    return fit(task, optimizer, train_loader, test_loader, config, resume)
