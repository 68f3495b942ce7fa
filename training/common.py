"""The sequence every run goes through, written once: resume check, device, data, run record, the
stages an entry script builds, the loop (helper/loop.py), the summary line."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from dataset.build import build_data
from helper import distributed
from helper.loop import FitResult, Task
from helper.run_folder import RunPlan, Stage, record_run, resolve_resume
from helper.runner import run_stage, setup


@dataclass
class RunInputs:
    """What a run has once its device and data are ready: handed to the script's ``build``."""

    opt: argparse.Namespace
    plan: RunPlan
    device: torch.device
    data: Any
    train_loader: Any
    test_loader: Any
    resume: dict[str, Any] | None
    record: dict[str, Any] | None
    loaded: Any = None  # what the script's ``load`` returned (before the seed was set)


@dataclass
class StagePlan:
    """One training stage: its task and optimizer, and for a pre-training stage (Stage.INIT) its own
    epochs and learning rate, without validation, tensorboard or a learning-rate schedule."""

    task: Task
    optimizer: torch.optim.Optimizer
    stage: Stage = Stage.MAIN
    epochs: int | None = None
    learning_rate: float | None = None


@dataclass
class Training:
    """What a script trains: its stages (built one after the other, each after the previous one
    ran), what every checkpoint records beside the model, and the lines printed before and after."""

    stages: Iterator[StagePlan]
    banner: str
    summary: Callable[[FitResult], str]
    extra: dict[str, Any] = field(default_factory=dict)


def train_run(opt: argparse.Namespace, plan: RunPlan, tensorboard_dir: Path,
              build: Callable[[RunInputs], Training], views: tuple[str, ...] = ("weak",),
              load: Callable[[], Any] | None = None) -> float:
    """Train into the plan's run folder (held by this process); returns the best test accuracy.

    ``load`` runs before the seed is set (e.g. a checkpoint to start from); ``build`` makes the
    stages once the data is loaded; ``tensorboard_dir``: where the main stage logs for tensorboard."""
    run_dir = plan.run_dir
    resume = resolve_resume(run_dir, plan.model_name, opt.resume, opt.epochs, plan.identity)
    loaded = load() if load is not None else None
    device = setup(opt)
    data, train_loader, test_loader = build_data(opt, device, views=views)
    record = record_run(plan, data, resume)
    training = build(RunInputs(opt, plan, device, data, train_loader, test_loader, resume, record, loaded))
    print(training.banner)
    result = None
    for stage in training.stages:
        main = stage.stage == Stage.MAIN
        result = run_stage(stage.task, stage.optimizer, train_loader, test_loader if main else None, opt, run_dir,
                           tensorboard_dir if main else None, plan.model_name, plan.model_name, resume,
                           stage=stage.stage, epochs=stage.epochs, learning_rate=stage.learning_rate,
                           validate=main, extra=training.extra)
    assert result is not None, "a run trains at least its main stage"
    print(training.summary(result))
    distributed.finish()
    return result.best_acc
