"""train_teacher.py: train a teacher (or a vanilla student) with cross-entropy; its flags, run plan
and stage.

    python train_teacher.py --model resnet32x4
    torchrun --nproc_per_node 4 train_teacher.py --model resnet32x4 --lr_scaling linear
Saves to save/models/<model>_vanilla[_trial_<t>]/ (other datasets: <model>_<dataset>_vanilla...).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from dataset.digest import known_content
from helper.errors import UserError, did_you_mean, report_user_errors
from helper.loop import ClassifierTask
from helper.options import (HelpFormatter, add_training_args, check_model_for_dataset,
                            finalize_training_args)
from helper.provenance import run_identity, training_settings
from helper.run_folder import RunPlan, run_folder, teacher_folder_name, tensorboard_folder
from helper.optimizers import make_optimizer
from helper.runner import prepare_model, train_or_describe
from helper.util import plural
from models import all_model_dict
from training.common import RunInputs, StagePlan, Training, train_run


def build_parser() -> argparse.ArgumentParser:
    """The command line (RepDistiller's train_teacher.py flags plus this repo's additions)."""
    parser = argparse.ArgumentParser(description="Train a CIFAR-style classifier (teacher) with cross-entropy.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--model", type=str, default="resnet110", help=f"architecture: {' '.join(all_model_dict)}")
    add_training_args(parser, learning_rate=None, trial="0")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    opt = build_parser().parse_args(argv)
    if opt.model not in all_model_dict:
        raise UserError(f"Unknown --model '{opt.model}'.{did_you_mean(opt.model, all_model_dict)}"
                        f" Choose one of: {', '.join(all_model_dict)}.")
    check_model_for_dataset(opt.model, opt.dataset, "--model")
    return finalize_training_args(opt, opt.model)


def run_plan(opt: argparse.Namespace) -> RunPlan:
    """The run folder save/models/<teacher_folder_name> and its checkpoint name and epochs."""
    name = teacher_folder_name(opt.model, opt.dataset, opt.trial)
    return RunPlan(run_folder(opt.save_folder, "vanilla", name), opt.model, opt.epochs, Path(opt.save_folder),
                   run_identity("train_teacher", training_settings(opt), None,
                                known_content(opt.dataset, opt.data_folder)))


@report_user_errors
def main(argv: list[str] | None = None) -> float | None:
    opt = parse_args(argv)
    return train_or_describe(opt, run_plan(opt), train)


def train(opt: argparse.Namespace, plan: RunPlan) -> float:
    """Train into the plan's run folder (held by this process); returns the best test accuracy."""
    return train_run(opt, plan, tensorboard_folder(opt.save_folder, "vanilla", plan.run_dir.name), build_training)


def build_training(inputs: RunInputs) -> Training:
    """One stage: cross-entropy training of a fresh --model."""
    opt, device = inputs.opt, inputs.device
    model = prepare_model(all_model_dict[opt.model](num_classes=inputs.data.num_classes), opt, device)
    optimizer = make_optimizer(model.parameters(), opt, device)
    banner = (f"Training {opt.model} from scratch (cross-entropy) on {opt.dataset} "
              f"({plural(len(inputs.train_loader), 'step')}/epoch, device {device}) -> {inputs.plan.run_dir}")
    return Training(iter([StagePlan(ClassifierTask(model), optimizer)]), banner,
                    lambda result: f"best accuracy: {result.best_acc:.2f}  last accuracy: {result.last_acc:.2f}",
                    {"run": inputs.record})


def teacher_bank_job(opt: argparse.Namespace) -> None:
    """A teacher run reads no teacher bank (scripts/sweep.py asks every run)."""
    return None
