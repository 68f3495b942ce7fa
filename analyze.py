"""See what distillation did: figures and numbers comparing a teacher with its distilled students.

    python analyze.py --path_t save/models/resnet32x4_vanilla/ckpt_epoch_240.pth \
        --path_s save/student/student_model/kd_cifar100_S_resnet8x4_T_resnet32x4_r_0.1_a_0.9_b_0_trial_1 \
                 save/student/student_model/dcd_cifar100_S_resnet8x4_T_resnet32x4_r_1_a_0_b_1_trial_1

On the test split it writes t-SNE of the penultimate embeddings, teacher-student class correlation
differences of the logits, layer-wise linear CKA (Kornblith et al., 2019), reliability diagrams and ECE
(Guo et al., 2017) and per-class accuracy differences, each as a PNG with its numbers (CSV/JSON).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from analysis.extract import build_model, open_checkpoint
from analysis.report import Settings, analyze
from dataset import DATASETS, load_dataset
from helper.errors import UserError, report_user_errors
from helper.options import HelpFormatter
from helper.util import configure_threads, resolve_device


def build_parser() -> argparse.ArgumentParser:
    """The command line: checkpoints, dataset, device, output folder and how much of the test split to use."""
    parser = argparse.ArgumentParser(description="Figures and numbers comparing a teacher with its students.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--path_t", type=str, default=None, help="teacher checkpoint (.pth) or run folder")
    parser.add_argument("--path_s", type=str, nargs="+", default=None,
                        help="student checkpoints or run folders (a folder: <model>_best.pth, else <model>_last.pth)")
    parser.add_argument("--dataset", type=str, default="cifar100", choices=list(DATASETS),
                        help="the dataset the models were trained on (its test split is analysed)")
    parser.add_argument("--data_folder", type=str, default="./data", help="datasets live here in official layouts")
    parser.add_argument("--device", type=str, default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--out", type=str, default=None,
                        help="output folder (default: save/analysis/<teacher folder name>)")
    parser.add_argument("--num_samples", type=int, default=1000,
                        help="test samples for layer CKA and the t-SNE (a fixed random subset when there are more)")
    parser.add_argument("--classes", type=int, default=10, help="classes shown in the t-SNE (the first N)")
    parser.add_argument("--batch_size", type=int, default=256, help="images per forward pass")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample subsets and of t-SNE")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the flags; fill the default output folder."""
    opt = build_parser().parse_args(argv)
    if opt.path_t is None or not opt.path_s:
        raise UserError("--path_t and --path_s are required: the teacher checkpoint and one or more student "
                        "checkpoints or run folders, e.g. --path_t save/models/resnet32x4_vanilla/ckpt_epoch_240.pth "
                        "--path_s save/student/student_model/<run folder> (train students with train_student.py).")
    for flag in ("num_samples", "classes", "batch_size"):
        if getattr(opt, flag) < 1:
            raise UserError(f"--{flag} must be a positive integer, got {getattr(opt, flag)}.")
    if opt.out is None:
        teacher = Path(opt.path_t)
        opt.out = str(Path("save") / "analysis" / (teacher.name if teacher.is_dir() else teacher.parent.name))
    return opt


@report_user_errors
def main(argv: list[str] | None = None) -> Path:
    opt = parse_args(argv)
    started = time.perf_counter()
    device = parse_device(opt.device)
    configure_threads(device)
    checkpoints = [open_checkpoint(opt.path_t, "--path_t", "teacher", opt.dataset),  # fail fast, before data
                   *(open_checkpoint(path, "--path_s", "student", opt.dataset) for path in opt.path_s)]
    data = load_dataset(opt.dataset, opt.data_folder, download=os.environ.get("DISTILLERS_OFFLINE", "0") != "1")
    teacher, *students = [build_model(checkpoint, data.num_classes, device) for checkpoint in checkpoints]
    out = Path(opt.out)
    settings = Settings(num_samples=opt.num_samples, classes=opt.classes, batch_size=opt.batch_size, seed=opt.seed)
    rows = analyze(teacher, students, data, out, device, settings)
    print_summary(rows)
    print(f"\nAnalysis of {len(students)} student(s) against {teacher.arch} on {opt.dataset} "
          f"({data.num_test} test images) took {time.perf_counter() - started:.1f}s.\nFigures and numbers: {out}")
    return out


def parse_device(name: str) -> torch.device:
    """--device as the training scripts read it; a name torch does not know is a UserError."""
    try:
        return resolve_device(name)
    except RuntimeError:
        raise UserError(f"--device '{name}' is not a device: use auto, cpu, cuda or cuda:N.") from None


def print_summary(rows: list[dict]) -> None:
    """One line per model: top-1, agreement with the teacher, ECE, mean |dC| and CKA of the last features."""
    print(f"{'model':<28} {'arch':<11} {'top-1':>6} {'agree':>6} {'ECE%':>6} {'|dC|':>7} {'CKA':>6}")
    for row in rows:
        corr, cka = row.get("logit_corr_mean_abs_diff"), row.get("cka_penultimate")
        print(f"{row['model'][:28]:<28} {row['arch']:<11} {row['test_acc1']:6.2f} "
              f"{row['agreement_with_teacher']:6.2f} {row['ece_percent']:6.2f} "
              f"{'' if corr is None else f'{corr:.4f}':>7} {'' if cka is None else f'{cka:.3f}':>6}")


if __name__ == "__main__":
    main()
