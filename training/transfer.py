"""transfer_student.py: linear evaluation of a distilled student on another dataset (STL-10,
TinyImageNet); its flags, run plan and stage.

    python transfer_student.py --path_s <student ckpt> --model_s wrn_16_2 --dataset stl10 --trial 1
The student's classifier is replaced by a new linear layer for the target classes; everything
else is frozen (BatchNorm statistics included) and only that layer is trained.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from torch import nn

from dataset.digest import known_content
from helper.checkpoint import load_checkpoint, load_weights
from helper.errors import UserError, did_you_mean, report_user_errors
from helper.loop import ClassifierTask
from helper.options import HelpFormatter, add_training_args, finalize_training_args
from helper.provenance import checkpoint_source, run_identity, training_settings
from helper.run_folder import RunPlan, run_folder, tensorboard_folder, transfer_folder_name
from helper.optimizers import make_optimizer
from helper.runner import prepare_model, train_or_describe
from helper.util import plural
from models import classifier_key, get_classifier, model_dict, set_classifier
from training.common import RunInputs, StagePlan, Training, train_run


def build_parser() -> argparse.ArgumentParser:
    """The command line (the DCD/RRD transfer_student.py flags plus this repo's additions; no ImageNet)."""
    parser = argparse.ArgumentParser(description="Train a linear classifier on a frozen distilled student.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--path_s", type=str, default=None,
                        help="distilled student checkpoint (required), e.g. "
                             "save/student/student_model/<run>/<model_s>_best.pth")
    parser.add_argument("--model_s", type=str, default="wrn_16_2", help=f"student arch: {' '.join(model_dict)}")
    add_training_args(parser, epochs=120, learning_rate=None, lr_decay_epochs="30,60,90", dataset="stl10",
                      datasets=("stl10", "tinyimagenet", "cifar100", "cifar10", "digits"), trial="0")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    opt = build_parser().parse_args(argv)
    if opt.model_s not in model_dict:
        raise UserError(f"Unknown --model_s '{opt.model_s}'.{did_you_mean(opt.model_s, model_dict)}"
                        f" Choose one of: {', '.join(model_dict)}.")
    if opt.path_s is None:
        raise UserError("--path_s is required: the distilled student's checkpoint, e.g. save/student/student_model/"
                        "<run>/<model_s>_best.pth.")
    return finalize_training_args(opt, opt.model_s)


def student_classes(path: str, state: dict[str, Any], arch: str) -> int:
    """The number of classes of the student checkpoint ``state``, after checking that it holds an
    ``arch`` (the architecture it records, else its classifier's key)."""
    recorded = state.get("arch")
    if isinstance(recorded, str) and recorded != arch:
        raise UserError(f"--path_s '{path}' holds a '{recorded}' model but --model_s is '{arch}'. Pass "
                        f"--model_s {recorded}, or the checkpoint of a '{arch}' student.")
    weight = state["model"].get(f"{classifier_key(arch)}.weight")
    if weight is None:
        raise UserError(f"--path_s '{path}' does not look like a '{arch}' checkpoint (no classifier weights "
                        f"'{classifier_key(arch)}.weight'). Pass the --model_s that the file was trained as.")
    return int(weight.shape[0])


def load_student(path: str, arch: str) -> nn.Module:
    """Build ``arch`` with the checkpoint's own number of classes and load it strictly."""
    state = load_checkpoint(Path(path), "student checkpoint (--path_s)")
    model = model_dict[arch](num_classes=student_classes(path, state, arch))
    load_weights(model, state, path, arch, "--path_s")
    if state.get("deployed"):
        print(f"note: '{path}' was evaluated as the --distill {state['deployed'].get('method')} network (the student "
              "plus the modules under 'deployed'); the linear probe reads the student backbone's pooled features "
              "and leaves those modules out.")
    return model


def linear_probe(model: nn.Module, num_classes: int) -> nn.Linear:
    """Freeze ``model`` and give it a new N(0, 0.01)-initialised linear head for ``num_classes``."""
    model.requires_grad_(False)
    old = get_classifier(model)
    head = nn.Linear(old.in_features, num_classes)
    nn.init.normal_(head.weight, 0.0, 0.01)
    nn.init.zeros_(head.bias)
    set_classifier(model, head)
    return head


def run_name(opt: argparse.Namespace) -> str:
    return transfer_folder_name(opt.dataset, opt.model_s, opt.path_s, opt.trial)


def run_plan(opt: argparse.Namespace) -> RunPlan:
    """The run folder save/transfer/transfer_model/<run_name>, its checkpoint name and epochs, and what
    the run is: its settings and the student checkpoint it starts from (checked before any data is
    loaded: it must hold a --model_s; its dataset may differ, that is the point of a transfer)."""
    state = load_checkpoint(Path(opt.path_s), "student checkpoint (--path_s)", mmap=True)
    source = checkpoint_source(opt.path_s, state, opt.model_s, student_classes(opt.path_s, state, opt.model_s))
    return RunPlan(run_folder(opt.save_folder, "transfer", run_name(opt)), opt.model_s, opt.epochs,
                   Path(opt.save_folder), run_identity("transfer_student", training_settings(opt), source,
                                                       known_content(opt.dataset, opt.data_folder)))


@report_user_errors
def main(argv: list[str] | None = None) -> float | None:
    opt = parse_args(argv)
    return train_or_describe(opt, run_plan(opt), train)


def train(opt: argparse.Namespace, plan: RunPlan) -> float:
    """Train the linear probe into the plan's run folder (held by this process); returns the best test accuracy."""
    return train_run(opt, plan, tensorboard_folder(opt.save_folder, "transfer", plan.run_dir.name), build_training,
                     load=lambda: load_student(opt.path_s, opt.model_s))


def build_training(inputs: RunInputs) -> Training:
    """One stage: a new linear head on the frozen student (``inputs.loaded``)."""
    opt, device, data, model = inputs.opt, inputs.device, inputs.data, inputs.loaded
    head = linear_probe(model, data.num_classes)
    prepare_model(model, opt, device)
    optimizer = make_optimizer(head.parameters(), opt, device)
    banner = (f"Linear probe of {opt.model_s} from '{opt.path_s}' on {opt.dataset} ({data.num_classes} classes, "
              f"{plural(len(inputs.train_loader), 'step')}/epoch, device {device}) -> {inputs.plan.run_dir}")
    task = ClassifierTask(model, frozen=[model])  # whole network in eval mode: frozen BN statistics
    return Training(iter([StagePlan(task, optimizer)]), banner,
                    lambda result: (f"{opt.dataset} linear-probe accuracy: best {result.best_acc:.2f}  "
                                    f"last {result.last_acc:.2f}"),
                    {"source": str(opt.path_s), "run": inputs.record})


def teacher_bank_job(opt: argparse.Namespace) -> None:
    """A linear probe reads no teacher bank (scripts/sweep.py asks every run)."""
    return None
