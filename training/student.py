"""train_student.py: distil a teacher into a student with any method of distiller_zoo/ (RepDistiller
command line); its flags, run plan, models, teacher bank and stages.

    python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth \
        --distill kd --model_s resnet8x4 -r 0.1 -a 0.9 -b 0 --trial 1
    torchrun --nproc_per_node 8 train_student.py --dataset imagenet --path_t resnet34-b627a593.pth \
        --model_s tv_resnet18 --distill crd --lr_scaling linear --sync_bn
Loss = gamma*CE + alpha*KD + beta*method; omitted -r/-a/-b take the method's defaults.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from dataset import CLASS_COUNTS
from dataset.build import build_data
from dataset.digest import known_content
from dataset.teacher_bank import (AUTO_BUILD_MIN_EPOCHS, BankSpec, BuildStopped, TeacherBank, bank_blocker,
                                  check_request, data_digest, decide, is_built, open_or_build)
from distiller_zoo import METHODS, DistillContext, Distiller, DistillTask
from distiller_zoo.base import (PRESETS, add_distillation_arguments, check_method_arguments, recorded_settings,
                                resolve_distill, run_method_name, unused_method_flags)
from helper import distributed
from helper.checkpoint import checkpoint_arch, classifier_classes, load_checkpoint, load_weights
from helper.errors import UserError, did_you_mean, report_user_errors
from helper.folding import fold_batchnorm
from helper.loop import FitResult, validate
from helper.optimizers import check_optimizer_args, make_optimizer, unused_optimizer_settings
from helper.options import (HelpFormatter, check_model_for_dataset, check_range, explicit_flags,
                            finalize_training_args)
from helper.provenance import checkpoint_source, check_source_fits, run_identity, training_settings
from helper.run_folder import (RunPlan, Stage, epoch_checkpoint, resumes_stage, run_folder, student_folder_name,
                               teacher_folder_name, tensorboard_folder)
from helper.runner import prepare_model, setup, train_or_describe
from models import all_model_dict
import recipes
from training.common import RunInputs, StagePlan, Training, train_run

LOSS_WEIGHT_FLAGS = {"gamma": "-r", "alpha": "-a", "beta": "-b"}
FETCH_HINT = ("Fetch the published CIFAR-100 teachers with `sh scripts/fetch_pretrained_teachers.sh`, or train one "
              "with train_teacher.py.")


def build_parser() -> argparse.ArgumentParser:
    """The command line: RepDistiller's train_student.py flags, every method's own flags, this repo's additions."""
    parser = argparse.ArgumentParser(description="Knowledge distillation from a trained teacher into a student.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--model_s", type=str, default="resnet8", help=f"student: {' '.join(all_model_dict)}")
    parser.add_argument("--path_t", type=str, default=None,
                        help="teacher checkpoint (.pth with a 'model' key; required), e.g. "
                             "./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth")
    parser.add_argument("--distill", type=str, default="kd", help=f"method: {' '.join([*METHODS, *PRESETS])}")
    parser.add_argument("--recipe", type=str, default=None,
                        help="train a cell of a published table, TABLE/TEACHER-STUDENT/METHOD (e.g. "
                             "dkd-cifar100/resnet56-resnet20/dkd): its dataset, student, method and settings, and "
                             "--path_t <save_folder>/models/<teacher>_vanilla/ckpt_epoch_240.pth unless given. Flags "
                             "given as well win and are recorded as departures (default: none, the flags alone). "
                             "Tables: python -m recipes --list")
    add_distillation_arguments(parser)
    parser.add_argument("--teacher_bank", choices=["auto", "on", "off"], default="auto",
                        help="look the frozen teacher's outputs up in a bank of every (training image, crop/flip view) "
                             "instead of running it each step (same training up to float rounding; methods that read "
                             f"only logits or the pooled embedding). auto: use an existing bank; build one for runs of "
                             f"{AUTO_BUILD_MIN_EPOCHS}+ epochs. Banks live in <save_folder>/teacher_banks/")
    parser.add_argument("--build_teacher_bank", action="store_true",
                        help="build (or check) the teacher bank this run reads, then exit without training (the "
                             "sweeps do this once per teacher before the runs that share it)")
    return parser


@dataclass
class TeacherCheckpoint:
    """The --path_t checkpoint as ``finalize_student_args`` read it: its contents (``state``; None once
    the teacher is built from it) and where it comes from (helper.provenance.checkpoint_source: its
    architecture, classes and content digest)."""

    state: dict[str, Any] | None
    source: dict[str, Any]


class StudentOptions(argparse.Namespace):
    """train_student.py's options: what ``vars`` shows, checkpoints record under 'opt' and runs compare.
    The teacher checkpoint they name and what --recipe applied are held beside them (``teacher``,
    ``recipe_record``: slots, never options)."""

    __slots__ = ("teacher", "recipe_record")
    teacher: TeacherCheckpoint
    recipe_record: dict[str, Any] | None


def parse_args(argv: list[str] | None = None) -> StudentOptions:
    opt = build_parser().parse_args(argv, namespace=StudentOptions())
    opt.recipe_record = None
    if opt.recipe is not None:
        use_recipe(opt, explicit_flags(build_parser(), argv))
    return finalize_student_args(opt)


def use_recipe(opt: StudentOptions, given: set[str]) -> None:
    """--recipe: the cell's flags where the command line gave none (recipes.apply), its published
    teacher as --path_t unless given; the record of what it applied goes into the run's identity."""
    cell = recipes.find_cell(opt.recipe)
    opt.recipe_record = recipes.apply(cell, opt, given)
    if opt.path_t is None:
        opt.path_t = published_teacher_path(opt.save_folder, cell.teacher)


def published_teacher_path(save_folder: str, arch: str) -> str:
    """Where scripts/fetch_pretrained_teachers.sh puts the published ``arch`` teacher."""
    return str(epoch_checkpoint(run_folder(save_folder, "vanilla", teacher_folder_name(arch, "cifar100", "0")), 240))


def finalize_student_args(opt: argparse.Namespace) -> StudentOptions:
    """Validate flags, fill the method's default weights and find the teacher's architecture."""
    if not isinstance(opt, StudentOptions):
        opt = StudentOptions(**vars(opt))
        opt.recipe_record = None
    if opt.model_s not in all_model_dict:
        raise UserError(f"Unknown --model_s '{opt.model_s}'.{did_you_mean(opt.model_s, all_model_dict)}"
                        f" Choose one of: {', '.join(all_model_dict)}.")
    resolve_distill(opt)
    method = METHODS[opt.distill]
    check_method_arguments(opt)
    check_optimizer_args(opt)
    finalize_training_args(opt, opt.model_s)  # every range checked before anything is loaded
    check_request(opt.teacher_bank, opt.build_teacher_bank, why_no_bank(opt))
    if opt.path_t is None:
        raise UserError("--path_t is required: the teacher checkpoint, e.g. "
                        f"./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth. {FETCH_HINT}")
    for flag, name in (("gamma", "default_gamma"), ("alpha", "default_alpha"), ("beta", "default_beta")):
        if getattr(opt, flag) is None:
            setattr(opt, flag, getattr(method, name))
        check_range(flag, getattr(opt, flag), 0, True, None, False, f"the loss weight {LOSS_WEIGHT_FLAGS[flag]}")
    if opt.gamma == opt.alpha == opt.beta == 0:
        warnings.warn("-r, -a and -b are all 0: the student receives no training signal.", stacklevel=2)
    check_model_for_dataset(opt.model_s, opt.dataset, "--model_s")
    # --print_run_dir maps the file instead of reading it: only the arch (or the weights' shapes) is needed
    teacher_state = load_checkpoint(Path(opt.path_t), "teacher checkpoint (--path_t)", missing_hint=FETCH_HINT,
                                    mmap=opt.print_run_dir)
    opt.model_t = teacher_arch(opt.path_t, teacher_state)
    recipe = opt.recipe_record
    if recipe and opt.model_t != recipe["teacher"]:
        raise UserError(f"--path_t '{opt.path_t}' is a {opt.model_t} teacher, but --recipe {recipe['name']} distils "
                        f"a {recipe['teacher']}. Pass a {recipe['teacher']} checkpoint, or drop --path_t to use "
                        f"{published_teacher_path(opt.save_folder, recipe['teacher'])}.")
    check_model_for_dataset(opt.model_t, opt.dataset, "The teacher (--path_t)")
    teacher_source = checkpoint_source(opt.path_t, teacher_state, opt.model_t,
                                       classifier_classes(teacher_state, opt.model_t))
    check_source_fits(teacher_source, opt.dataset, CLASS_COUNTS.get(opt.dataset), "--path_t")
    opt.teacher = TeacherCheckpoint(teacher_state, teacher_source)
    return opt


def teacher_arch(path: str, state: dict[str, Any]) -> str:
    """The arch recorded in the checkpoint, else the longest model name prefixing the folder name,
    else the torchvision architecture whose keys and shapes the weights have (torchvision's files)."""
    return checkpoint_arch(path, state, "teacher")


def run_name(opt: argparse.Namespace) -> str:
    """<distill>_<dataset>_S_<model_s>_T_<model_t>_r_<r>_a_<a>_b_<b>_trial_<t>, as RepDistiller names it
    (<distill>: 'crd_dot' for --distill crd --optimizer dot, 'dot' for KD's)."""
    return student_folder_name(run_method_name(opt.distill, opt.optimizer), opt.dataset, opt.model_s, opt.model_t, opt.gamma, opt.alpha, opt.beta,
                               opt.trial)


def run_plan(opt: argparse.Namespace) -> RunPlan:
    """The run folder save/student/student_model/<run_name>, its checkpoint name and epochs, and what
    the run is: its settings (all but other methods' and optimizers' flags), the teacher's content
    digest, the data's when it is known without loading it (dataset/digest.py), and what --recipe applied."""
    settings = training_settings(opt, unused_method_flags(opt.distill) | unused_optimizer_settings(opt),
                                 teacher_mode=METHODS[opt.distill].teacher_mode)
    identity = run_identity("train_student", recorded_settings(settings), opt.teacher.source,
                            known_content(opt.dataset, opt.data_folder), opt.recipe_record)
    return RunPlan(run_folder(opt.save_folder, "student", run_name(opt)), opt.model_s, opt.epochs,
                   Path(opt.save_folder), identity)


def feature_shapes(model: torch.nn.Module, preact: bool, device: torch.device, size: int = 32) -> list[torch.Size]:
    """Shapes of ``model``'s feature list for a 2x3x``size``x``size`` batch (eval mode, no grad)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        feats, _ = model(torch.zeros(2, 3, size, size, device=device), is_feat=True, preact=preact)
    model.train(was_training)
    return [f.shape for f in feats]


def load_teacher(opt: StudentOptions, num_classes: int, device: torch.device) -> torch.nn.Module:
    """The teacher of --path_t (loaded with strict=True), frozen, on ``device`` (not compiled: the
    training step runs ``teacher_for_forward``'s copy). The checkpoint's contents are let go."""
    teacher = all_model_dict[opt.model_t](num_classes=num_classes)
    load_weights(teacher, opt.teacher.state, opt.path_t, opt.model_t, "--path_t")
    opt.teacher.state = None
    teacher.eval().requires_grad_(False)
    return prepare_model(teacher, opt, device, trained=False, compile=False)


def teacher_for_forward(teacher: torch.nn.Module, opt: argparse.Namespace, device: torch.device,
                        mode: str = "eval") -> torch.nn.Module:
    """A copy of the frozen teacher for the training step's forward, compiled with --compile. For a
    method whose ``teacher_mode`` is "eval": BatchNorm folded into the convolutions (same features and
    logits up to float rounding). For "train": unfolded, its BatchNorm normalising with each batch's
    statistics (with --sync_bn, the global batch's), its running statistics moving on in the copy
    only (``teacher`` keeps the checkpoint's, for validation)."""
    if mode == "train":
        copy = distributed.convert_sync_batchnorm(deepcopy(teacher), device) if opt.sync_bn else deepcopy(teacher)
        return prepare_model(copy.requires_grad_(False), opt, device, trained=False)
    folded, _ = fold_batchnorm(teacher, opt.image_size or 32)
    return prepare_model(folded, opt, device, trained=False)


def build_models(opt: StudentOptions, data: Any, device: torch.device
                 ) -> tuple[torch.nn.Module, torch.nn.Module, Distiller]:
    """Teacher (from --path_t, frozen), a fresh student, and the --distill method's modules
    (the student's and the method's BatchNorm over all ranks with --sync_bn)."""
    teacher = load_teacher(opt, data.num_classes, device)
    student = prepare_model(all_model_dict[opt.model_s](num_classes=data.num_classes), opt, device)
    method_class = METHODS[opt.distill]
    size = opt.image_size or 32
    context = DistillContext(opt, student, teacher, feature_shapes(student, method_class.uses_preact, device, size),
                             feature_shapes(teacher, method_class.teacher_uses_preact(), device, size),
                             data.train_labels.to(device), device)
    method = method_class(context).to(device)
    if distributed.is_main() and (notice := method_class.warmup_notice(opt)):
        print(notice, flush=True)
    if opt.sync_bn:
        method = distributed.convert_sync_batchnorm(method, device)
    return student, teacher, method


def main_stage(student: torch.nn.Module, teacher: torch.nn.Module, method: Distiller, opt: argparse.Namespace,
               device: torch.device, bank: TeacherBank | None = None, task_class: type[DistillTask] = DistillTask
               ) -> tuple[DistillTask, torch.optim.Optimizer]:
    """The main-stage training step and its --optimizer over the student's and the method's trainable
    parameters."""
    task = task_class(student, teacher, method, opt.gamma, opt.alpha, opt.beta, opt.kd_T,
                      logit_stand=opt.logit_stand, bank=bank)
    optimizer = make_optimizer([*student.parameters(), *method.trainable_parameters()], opt, device,
                               name=opt.optimizer)
    return task, optimizer


@dataclass
class StudentRun:
    """The built pieces of a student run: the fresh student, the frozen teacher (as loaded, for
    validation), the method, the teacher bank (or None) and the teacher the training step runs
    (unused with a bank)."""

    opt: argparse.Namespace
    device: torch.device
    student: torch.nn.Module
    teacher: torch.nn.Module
    method: Distiller
    bank: TeacherBank | None
    forward_teacher: torch.nn.Module

    def main_task(self, task_class: type[DistillTask] = DistillTask) -> tuple[DistillTask, torch.optim.Optimizer]:
        """The main stage's training step and optimizer (``main_stage``)."""
        return main_stage(self.student, self.forward_teacher, self.method, self.opt, self.device, self.bank,
                          task_class=task_class)


def assemble(opt: argparse.Namespace, plan: RunPlan | None, data: Any, train_loader: Any, device: torch.device,
             open_bank: Callable[[torch.nn.Module, Distiller], TeacherBank | None] | None = None) -> StudentRun:
    """Build a student run on loaded data: models and method (``build_models``), the teacher bank
    (``open_bank(teacher, method)``, by default the run's --teacher_bank: ``teacher_bank``) and the
    teacher of the training step (``teacher_for_forward``; the loaded teacher when a bank serves it)."""
    student, teacher, method = build_models(opt, data, device)
    bank = (open_bank(teacher, method) if open_bank is not None
            else teacher_bank(opt, plan, data, teacher, device))
    if bank is not None:  # the task looks the teacher up by (sample, view)
        train_loader.with_view_ids()
    forward_teacher = teacher if bank is not None else teacher_for_forward(teacher, opt, device, method.teacher_mode)
    return StudentRun(opt, device, student, teacher, method, bank, forward_teacher)


def init_stage(run: StudentRun, opt: argparse.Namespace, device: torch.device) -> StagePlan:
    """The method's pre-training stage (abound/factor/fsp): only its init modules train, at its own
    learning rate, for --init_epochs."""
    task = DistillTask(run.student, run.forward_teacher, run.method, opt.gamma, opt.alpha, opt.beta, opt.kd_T,
                       stage=Stage.INIT)
    params = [p for module in task.init_modules for p in module.parameters()]
    learning_rate = run.method.init_learning_rate(opt)
    return StagePlan(task, make_optimizer(params, opt, device, learning_rate), Stage.INIT, opt.init_epochs,
                     learning_rate)


def bank_spec(plan: RunPlan, data: Any, teacher: torch.nn.Module, device: torch.device, amp: str) -> BankSpec:
    """Which teacher bank the run reads: the teacher's outputs for the training split as the loader
    normalizes it, computed under the run's --amp autocast (the bank holds what the teacher of a
    training step computes)."""
    source = plan.identity["teacher"]
    return BankSpec(source["digest"], source["arch"], plan.identity["settings"]["dataset"], data.num_train,
                    data_digest(data.train_images), int(data.train_images.shape[-1]), tuple(data.mean),
                    tuple(data.std), data.num_classes, int(feature_shapes(teacher, False, device)[-1][1]), amp)


def bank_outputs(opt: argparse.Namespace) -> tuple[str, ...]:
    """What the run reads of the bank: the logits, and the pooled embedding when its method reads it."""
    return ("logits", "embedding") if METHODS[opt.distill].teacher_reads == "embedding" else ("logits",)


def why_no_bank(opt: argparse.Namespace) -> str | None:
    """Why this run cannot read a teacher bank (its method, loader or dataset), or None when it can."""
    method = METHODS[opt.distill]
    return bank_blocker(method.key, method.teacher_reads, method.views, opt.loader, opt.dataset, method.teacher_mode)


def teacher_bank(opt: argparse.Namespace, plan: RunPlan, data: Any, teacher: torch.nn.Module,
                 device: torch.device) -> TeacherBank | None:
    """The teacher bank this run reads (--teacher_bank; dataset/teacher_bank.py), built if needed, or
    None. Ctrl-C or SIGTERM while it is built ends the process (130/143) with one line: the finished
    chunks are kept."""
    blocker = why_no_bank(opt)
    if opt.teacher_bank == "off" or blocker is not None:  # on: refused from the flags (check_request)
        return None
    spec, outputs = bank_spec(plan, data, teacher, device, opt.amp), bank_outputs(opt)
    root = Path(opt.save_folder) / "teacher_banks"
    use, why_not = decide(opt.teacher_bank, None, opt.epochs, is_built(root, spec, outputs))
    if not use:
        if why_not and distributed.is_main():
            print(why_not)
        return None
    try:  # built by the teacher as a training step runs it: BatchNorm folded, compiled with --compile, --amp
        bank = open_or_build(root, spec, outputs, teacher_for_forward(teacher, opt, device), data.train_images,
                             device, opt.channels_last, progress=not opt.no_progress and distributed.is_main())
    except BuildStopped as stop:
        if distributed.is_main():
            print(stop, file=sys.stderr, flush=True)
        sys.exit(stop.exit_status)
    if distributed.is_main():
        print(f"teacher bank: on ({', '.join(outputs)} of every training view from '{bank.folder}'; the teacher "
              "does not run during training)")
    return bank.to(device)


@report_user_errors
def main(argv: list[str] | None = None) -> float | None:
    opt = parse_args(argv)
    if opt.build_teacher_bank:
        build_teacher_bank(opt, run_plan(opt))
        return None
    return train_or_describe(opt, run_plan(opt), train)


def teacher_bank_job(opt: argparse.Namespace) -> tuple[tuple[Any, ...], tuple[str, ...]] | None:
    """(the bank folder runs read: runs with equal keys share it, what this run reads of it), or None
    when this run reads none (--teacher_bank off, or a method, loader or dataset a bank cannot serve)."""
    if opt.teacher_bank == "off" or why_no_bank(opt):
        return None
    key = (opt.teacher.source["digest"], opt.dataset, str(Path(opt.data_folder).resolve()),
           str(Path(opt.save_folder).resolve()), opt.amp)
    return key, bank_outputs(opt)


def build_teacher_bank(opt: argparse.Namespace, plan: RunPlan) -> None:
    """--build_teacher_bank: build (or open and check) the bank this run would read; train nothing
    (a run no bank can serve was refused from its flags)."""
    device = setup(opt)
    data, _, _ = build_data(opt, device, views=METHODS[opt.distill].views)
    _, teacher, _ = build_models(opt, data, device)
    opt.teacher_bank = "on"
    bank = teacher_bank(opt, plan, data, teacher, device)
    print(f"teacher bank ready: {bank.folder}")


def train(opt: argparse.Namespace, plan: RunPlan) -> float:
    """Distil into the plan's run folder (held by this process); returns the best test accuracy."""
    return train_run(opt, plan, tensorboard_folder(opt.save_folder, "student", plan.run_dir.name), build_training,
                     views=METHODS[opt.distill].views)


def build_training(inputs: RunInputs) -> Training:
    """The student run's stages: the method's pre-training stage when it has one (skipped when the
    run resumes its main stage), then the main stage."""
    opt, device = inputs.opt, inputs.device
    run = assemble(opt, inputs.plan, inputs.data, inputs.train_loader, device)
    teacher_acc = validate(run.teacher, inputs.test_loader)["test_acc1"]
    banner = (f"{run_method_name(opt.distill, opt.optimizer)}: {opt.model_t} (teacher, test acc {teacher_acc:.2f}) "
              f"-> {opt.model_s} on {opt.dataset}, r={opt.gamma:g} a={opt.alpha:g} b={opt.beta:g}, device {device} "
              f"-> {inputs.plan.run_dir}")

    def stages() -> Iterator[StagePlan]:
        if run.method.init_stage and opt.init_epochs > 0 and not resumes_stage(inputs.resume, Stage.MAIN):
            yield init_stage(run, opt, device)
        task, optimizer = run.main_task()
        yield StagePlan(task, optimizer)

    def summary(result: FitResult) -> str:
        return (f"teacher accuracy: {teacher_acc:.2f}  student best accuracy: {result.best_acc:.2f}  "
                f"last: {result.last_acc:.2f}")

    return Training(stages(), banner, summary, {"model_t": opt.model_t, "teacher_acc": teacher_acc,
                                                "run": inputs.record})
