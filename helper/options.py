"""Command-line flags shared by the three entry scripts, their validation, and run-folder handling."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from helper import distributed
from helper.checkpoint import load_checkpoint
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


class StoreGiven(argparse.Action):
    """Store the value and remember that the user passed this flag (dataset defaults fill the others)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        namespace.given_flags = {*getattr(namespace, "given_flags", ()), self.dest}


def add_training_args(parser: argparse.ArgumentParser, *, epochs: int = 240, learning_rate: float | None = 0.05,
                      lr_decay_epochs: str = "150,180,210", dataset: str = "cifar100",
                      datasets: tuple[str, ...] = ("cifar100", "digits", "imagenet")) -> None:
    """The RepDistiller training flags, with its defaults, plus this repo's additions."""
    group = parser.add_argument_group("training")
    group.add_argument("--print_freq", type=int, default=100, help="steps between progress updates (host syncs)")
    group.add_argument("--tb_freq", type=int, default=500, help="steps between tensorboard step scalars")
    group.add_argument("--save_freq", type=int, default=40, help="save ckpt_epoch_<N>.pth every N epochs")
    group.add_argument("--batch_size", type=int, default=64)
    group.add_argument("--num_workers", type=int, default=8, help="DataLoader workers (--loader classic only)")
    group.add_argument("--epochs", type=int, default=epochs, action=StoreGiven, help="imagenet: default 100")
    group.add_argument("--learning_rate", type=float, default=learning_rate, action=StoreGiven,
                       help="default 0.05 (0.01 for MobileNetV2/ShuffleV1/ShuffleV2; imagenet: 0.1 x batch_size/256)")
    group.add_argument("--lr_decay_epochs", type=str, default=lr_decay_epochs, action=StoreGiven,
                       help="comma list, e.g. 150,180,210 (imagenet: 30,60,90)")
    group.add_argument("--lr_decay_rate", type=float, default=0.1)
    group.add_argument("--weight_decay", type=float, default=5e-4, action=StoreGiven, help="imagenet: 1e-4")
    group.add_argument("--momentum", type=float, default=0.9)
    group.add_argument("--dataset", type=str, default=dataset, choices=list(datasets))
    group.add_argument("--trial", type=str, default="0", help="experiment id, part of the run folder name")

    ours = parser.add_argument_group("distillers additions")
    ours.add_argument("--data_folder", type=str, default="./data", help="datasets live here in official layouts")
    ours.add_argument("--save_folder", type=str, default="./save", help="checkpoints and logs go here")
    ours.add_argument("--device", type=str, default="auto", help="auto | cpu | cuda | cuda:N")
    ours.add_argument("--seed", type=int, default=None, help="random seed (default: derived from --trial)")
    ours.add_argument("--resume", type=str, default=None,
                      help="'auto' continues the run folder's last checkpoint; or a checkpoint PATH")
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

    scale = parser.add_argument_group("more GPUs and ImageNet (torchrun --nproc_per_node N <script>.py ...)")
    scale.add_argument("--lr_scaling", choices=["none", "linear"], default="none",
                       help="--batch_size is per process; 'linear' multiplies --learning_rate by the process count")
    scale.add_argument("--sync_bn", action="store_true",
                       help="BatchNorm statistics over the global batch (all processes) instead of each process's")
    scale.add_argument("--image_size", type=int, default=None,
                       help=f"imagenet: training crop size (default {IMAGENET_IMAGE_SIZE}; smaller for quick runs)")
    scale.add_argument("--decode", choices=["workers", "device"], default="workers",
                       help="imagenet JPEG decoding: in DataLoader workers, or batched on the device (nvjpeg on CUDA)")


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


def finalize_training_args(opt: argparse.Namespace, model_for_lr: str) -> argparse.Namespace:
    """Fill derived defaults and validate the shared flags (raises UserError)."""
    apply_dataset_defaults(opt, opt.__dict__.pop("given_flags", set()))
    opt.lr_decay_epochs_list = parse_decay_epochs(opt.lr_decay_epochs)
    if opt.learning_rate is None:
        opt.learning_rate = 0.01 if model_for_lr in SMALL_LR_ARCHS else 0.05
    for flag in ("batch_size", "epochs", "print_freq", "tb_freq", "save_freq"):
        if getattr(opt, flag) <= 0:
            raise UserError(f"--{flag} must be a positive integer, got {getattr(opt, flag)}.")
    if opt.learning_rate <= 0:
        raise UserError(f"--learning_rate must be positive, got {opt.learning_rate}.")
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


def ensure_writable(folder: Path) -> None:
    """Create ``folder`` (and parents) or explain why it cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write_test.{os.getpid()}"  # one per process: torchrun ranks probe together
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UserError(f"Cannot write to the run folder '{folder}' ({error.strerror}). Pass a writable "
                        "--save_folder, or fix the folder's permissions.") from None


def resolve_resume(run_dir: Path, model_name: str, resume: str | None, epochs: int) -> dict[str, Any] | None:
    """Return the checkpoint to resume from (or None for a fresh run).

    Creates the run folder (clear error when it cannot be written). Without --resume, an existing run folder with a checkpoint is never overwritten: finished runs
    ask for a new --trial, unfinished ones for --resume auto.
    """
    ensure_writable(run_dir)
    last = run_dir / f"{model_name}_last.pth"
    if resume is None:
        if last.exists():
            state = load_checkpoint(last, "last checkpoint")
            finished = state.get("stage", "main") == "main" and state["epoch"] >= epochs and not state.get("partial")
            if finished:
                raise UserError(f"The run folder '{run_dir}' already holds a finished run ({state['epoch']} epochs, "
                                f"best accuracy {state.get('best_acc', 0):.2f}). Use a new --trial to train "
                                "again, or delete the folder.")
            raise UserError(f"The run folder '{run_dir}' holds an unfinished run (checkpoint '{last.name}'). "
                            "Add --resume auto to continue it, or use a new --trial to start over.")
        others = sorted(path.name for path in run_dir.glob("*.pth"))
        if others:
            raise UserError(f"The run folder '{run_dir}' already holds checkpoints ({', '.join(others[:3])}), e.g. a "
                            "fetched published teacher. Use a new --trial so nothing is overwritten.")
        return None
    if resume == "auto":
        if not last.exists():
            if distributed.is_main():  # before torchrun's group is joined every rank would print
                print(f"--resume auto: no checkpoint in '{run_dir}', starting from scratch.")
            return None
        return load_checkpoint(last, "resume checkpoint")
    return load_checkpoint(Path(resume), "--resume checkpoint")


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
