"""Command-line flags shared by the three entry scripts and their validation (run folders: helper/run_folder.py)."""
from __future__ import annotations

import argparse
import math
import os
from typing import Any

from helper.errors import UserError

SMALL_LR_ARCHS = ("MobileNetV2", "ShuffleV1", "ShuffleV2")

# ImageNet recipe (He et al. 2016; Goyal et al. 2017), used for the flags the user did not pass;
# the learning rate is 0.1 x batch_size / 256.
IMAGENET_DEFAULTS: dict[str, Any] = {"epochs": 100, "lr_decay_epochs": "30,60,90", "weight_decay": 1e-4}
IMAGENET_IMAGE_SIZE = 224

SWITCH_CHOICES = ("auto", "on", "off")
# --compile auto compiles runs of at least this many training steps: compiling the student's training
# graph, the teacher's inference graph and the evaluation graph takes ~1-2 min on a 2-core CPU and
# saves ~20% of each step there (bench/RESULTS.md); on a GPU the steps are ~100x shorter.
COMPILE_MIN_STEPS = {"cpu": 2_000, "cuda": 20_000}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``-h`` shows every flag's default: '(default: X)' after the help, 'off' for a switch; a flag
    whose default is computed (None) says in its help what it becomes."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or action.default in (None, argparse.SUPPRESS) or not action.option_strings:
            return text
        if action.default is False and action.nargs == 0:
            return f"{text} (default: off)"
        return f"{text} (default: %(default)s)"


class StoreGiven(argparse.Action):
    """Store the value and remember that the user passed this flag (dataset defaults fill the others)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        namespace.given_flags = {*getattr(namespace, "given_flags", ()), self.dest}


def add_training_args(parser: argparse.ArgumentParser, *, epochs: int = 240, learning_rate: float | None = 0.05,
                      lr_decay_epochs: str = "150,180,210", dataset: str = "cifar100",
                      datasets: tuple[str, ...] = ("cifar100", "cifar10", "digits", "imagenet"),
                      trial: str = "0") -> None:
    """The RepDistiller training flags with the calling script's defaults, plus this repo's additions.

    The ImageNet flags (--image_size, --decode) and ImageNet default notes appear only when
    ``datasets`` holds 'imagenet'.
    """
    imagenet = "imagenet" in datasets
    small_lr = "0.05; 0.01 for MobileNetV2/ShuffleV1/ShuffleV2"
    group = parser.add_argument_group("training")
    group.add_argument("--print_freq", type=int, default=100, help="steps between progress updates (host syncs)")
    group.add_argument("--tb_freq", type=int, default=500, help="steps between tensorboard step scalars")
    group.add_argument("--save_freq", type=int, default=40, help="save ckpt_epoch_<N>.pth every N epochs")
    group.add_argument("--batch_size", type=int, default=64, help="images per step (per process under torchrun)")
    group.add_argument("--num_workers", type=int, default=8, help="DataLoader workers (--loader classic"
                       + (" and imagenet" if imagenet else "") + "; 0 = load in the main process)")
    group.add_argument("--epochs", type=int, default=epochs, action=StoreGiven,
                       help="training epochs" + ("; imagenet: 100" if imagenet else ""))
    group.add_argument("--learning_rate", type=float, default=learning_rate, action=StoreGiven,
                       help="SGD learning rate" if learning_rate is not None else
                       f"SGD learning rate (default {small_lr}" + ("; imagenet: 0.1 x batch_size/256)" if imagenet
                                                                  else ")"))
    group.add_argument("--lr_decay_epochs", type=str, default=lr_decay_epochs, action=StoreGiven,
                       help="comma list of epochs after which the learning rate is multiplied by --lr_decay_rate"
                       + ("; imagenet: 30,60,90" if imagenet else ""))
    group.add_argument("--lr_decay_rate", type=float, default=0.1, help="learning-rate factor at each decay epoch")
    group.add_argument("--weight_decay", type=float, default=5e-4, action=StoreGiven,
                       help="SGD weight decay" + ("; imagenet: 1e-4" if imagenet else ""))
    group.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    group.add_argument("--dataset", type=str, default=dataset, choices=list(datasets), help="dataset to train on")
    group.add_argument("-t", "--trial", type=str, default=trial, help="experiment id, part of the run folder name")

    ours = parser.add_argument_group("distillers additions")
    ours.add_argument("--data_folder", type=str, default="./data", help="datasets live here in official layouts")
    ours.add_argument("--save_folder", type=str, default="./save", help="checkpoints and logs go here")
    ours.add_argument("--device", type=str, default="auto", help="auto (cuda when available) | cpu | cuda | cuda:N")
    ours.add_argument("--seed", type=int, default=None,
                      help="random seed (default: the digits of --trial, e.g. 1 for --trial 1)")
    ours.add_argument("--resume", type=str, default=None,
                      help="'auto' continues the run folder's last checkpoint; or a checkpoint PATH (default: a "
                           "fresh run)")
    ours.add_argument("--loader", choices=["fast", "classic"], default="fast",
                      help="fast: data on the device + batched augmentation; classic: PIL + DataLoader")
    ours.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none",
                      help="autocast precision (fp32 'none' reproduces the published tables)")
    ours.add_argument("--channels_last", nargs="?", const="on", default="auto", choices=SWITCH_CHOICES,
                      help="NHWC memory format. auto: on for CUDA GPUs (compute capability >= 7.0) and for x86 "
                           "CPUs with AVX2/AVX-512 (measured 1.2-1.3x on CPU), else off; --channels_last alone = on")
    ours.add_argument("--compile", nargs="?", const="on", default="auto", choices=SWITCH_CHOICES,
                      help="torch.compile the student and the teacher. auto: on when the run has at least "
                           f"{COMPILE_MIN_STEPS['cpu']:,} (CPU) / {COMPILE_MIN_STEPS['cuda']:,} (CUDA) training steps "
                           "(epochs x steps per epoch), enough to repay the compile time, else off; --compile alone = "
                           "on. If compiling fails, training continues uncompiled after one warning")
    ours.add_argument("--no_progress", action="store_true", help="no tqdm bar (epoch lines are still printed)")
    ours.add_argument("--print_run_dir", action="store_true",
                      help="check the flags, print '<status> <run folder>' (status: missing, unfinished, finished, "
                           "or running: held by another live process) and exit without creating or loading anything")

    title = "more GPUs and ImageNet" if imagenet else "more GPUs"
    scale = parser.add_argument_group(f"{title} (torchrun --nproc_per_node N <script>.py ...)")
    scale.add_argument("--lr_scaling", choices=["none", "linear"], default="none",
                       help="--batch_size is per process; 'linear' multiplies --learning_rate by the process count")
    scale.add_argument("--sync_bn", action="store_true",
                       help="BatchNorm statistics over the global batch (all processes) instead of each process's")
    if imagenet:
        scale.add_argument("--image_size", type=int, default=None,
                           help=f"imagenet: training crop size (default {IMAGENET_IMAGE_SIZE}; smaller for quick "
                                "runs)")
        scale.add_argument("--decode", choices=["workers", "device"], default="workers",
                           help="imagenet JPEG decoding: in DataLoader workers, or batched on the device (nvjpeg on "
                                "CUDA)")


def explicit_flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The option names (dests) of the flags ``argv`` gives (None: the command line). Changes
    ``parser``'s defaults: pass a fresh one."""
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"given_flags"}


def parse_decay_epochs(text: str) -> list[int]:
    """'150,180,210' -> [150, 180, 210]; anything else is a clear error."""
    try:
        values = [int(part) for part in text.split(",") if part.strip() != ""]
    except ValueError:
        values = []
    if not values or any(b <= a for a, b in zip(values, values[1:])) or values[0] < 0:
        raise UserError(f"--lr_decay_epochs '{text}' must be a comma-separated list of increasing non-negative "
                        "integers, e.g. --lr_decay_epochs 150,180,210.")
    return values


# (flag, lowest, lowest allowed, highest, highest allowed, what it is): every numeric training flag.
TRAINING_RANGES: tuple[tuple[str, float | None, bool, float | None, bool, str], ...] = (
    ("batch_size", 1, True, None, False, "images per step"),
    ("epochs", 1, True, None, False, "training epochs"),
    ("print_freq", 1, True, None, False, "steps between progress updates"),
    ("tb_freq", 1, True, None, False, "steps between tensorboard scalars"),
    ("save_freq", 1, True, None, False, "epochs between ckpt_epoch_<N>.pth files"),
    ("num_workers", 0, True, None, False, "DataLoader worker processes (0 = none)"),
    ("learning_rate", 0, False, None, False, "the SGD learning rate"),
    ("lr_decay_rate", 0, False, 1, True, "the factor applied at each --lr_decay_epochs epoch"),
    ("momentum", 0, True, 1, False, "the SGD momentum"),
    ("weight_decay", 0, True, None, False, "the SGD weight decay"),
    ("seed", 0, True, 2**32 - 1, True, "the random seed"),
)


def check_range(flag: str, value: float, low: float | None, low_ok: bool, high: float | None, high_ok: bool,
                what: str) -> None:
    """UserError unless ``value`` is finite and inside the range (bounds inclusive where ``*_ok``)."""
    inside = math.isfinite(value)
    if inside and low is not None:
        inside = value >= low if low_ok else value > low
    if inside and high is not None:
        inside = value <= high if high_ok else value < high
    if inside:
        return
    lower = "" if low is None else f"{'>=' if low_ok else '>'} {low:g}"
    upper = "" if high is None else f"{'<=' if high_ok else '<'} {high:g}"
    bounds = " and ".join(part for part in (lower, upper) if part)
    raise UserError(f"--{flag} must be {bounds}, got {value:g}; it is {what}.")


def check_training_flags(opt: argparse.Namespace) -> None:
    """Range-check every numeric training flag present (before anything is loaded)."""
    for flag, low, low_ok, high, high_ok, what in TRAINING_RANGES:
        value = getattr(opt, flag, None)
        if value is not None:
            check_range(flag, value, low, low_ok, high, high_ok, what)
    if any(separator in str(opt.trial) for separator in ("/", "\\")) or not str(opt.trial).strip():
        raise UserError(f"--trial '{opt.trial}' names a run folder: use a word without '/', e.g. --trial 2.")


def finalize_training_args(opt: argparse.Namespace, model_for_lr: str) -> argparse.Namespace:
    """Fill derived defaults and validate the shared flags (raises UserError)."""
    check_training_flags(opt)
    apply_dataset_defaults(opt, opt.__dict__.pop("given_flags", set()))
    opt.lr_decay_epochs_list = parse_decay_epochs(opt.lr_decay_epochs)
    if opt.learning_rate is None:
        opt.learning_rate = 0.01 if model_for_lr in SMALL_LR_ARCHS else 0.05
    check_training_flags(opt)  # the learning rate an ImageNet run derived from --batch_size
    if opt.seed is None:
        digits = "".join(ch for ch in str(opt.trial) if ch.isdigit())
        opt.seed = int(digits[-9:]) if digits else 0
    return opt


def apply_dataset_defaults(opt: argparse.Namespace, given: set[str]) -> None:
    """ImageNet's epochs, schedule, weight decay, learning rate and crop size where the user passed none."""
    if opt.dataset != "imagenet":
        if getattr(opt, "image_size", None) is not None:
            raise UserError(f"--image_size applies to --dataset imagenet only; '{opt.dataset}' is stored at 32x32. "
                            "Drop --image_size.")
        return
    for flag, value in IMAGENET_DEFAULTS.items():
        if flag not in given:
            setattr(opt, flag, value)
    if "learning_rate" not in given:
        opt.learning_rate = 0.1 * opt.batch_size / 256
    if opt.image_size is None:
        opt.image_size = IMAGENET_IMAGE_SIZE
    if opt.image_size < 32:
        raise UserError(f"--image_size {opt.image_size} is too small for ImageNet networks (5 stride-2 stages); "
                        "use 32 or more, e.g. --image_size 64 for quick runs or 224 for the standard recipe.")


def check_model_for_dataset(model: str, dataset: str, flag: str) -> None:
    """ImageNet needs one of the torchvision architectures (the CIFAR ones pool a fixed 8x8 map)."""
    from models import imagenet_model_dict

    if dataset == "imagenet" and model not in imagenet_model_dict:
        raise UserError(f"{flag} '{model}' is a CIFAR architecture (32x32 inputs); --dataset imagenet needs one of "
                        f"the ImageNet architectures: {', '.join(imagenet_model_dict)}.")


def check_batch_size(batch_size: int, num_samples: int, dataset: str, world_size: int = 1) -> None:
    if batch_size * world_size > num_samples:
        if world_size == 1:
            raise UserError(f"--batch_size {batch_size} is larger than the {num_samples} training images of "
                            f"'{dataset}'; with drop_last no batch would be trained. Use --batch_size {num_samples} "
                            "or smaller.")
        raise UserError(f"--batch_size {batch_size} per process x {world_size} processes is larger than the "
                        f"{num_samples} training images of '{dataset}'; with drop_last no batch would be trained. "
                        f"Use --batch_size {num_samples // world_size} or smaller, or fewer processes.")


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
