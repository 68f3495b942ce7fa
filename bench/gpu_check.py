"""Device check: every GPU code path of the training step, timed, in under 5 minutes on one GPU.

    python3 bench/gpu_check.py                      # device cuda (needs one GPU), ~3-4 min
    python3 bench/gpu_check.py --device cpu --quick # the same paths on tiny models (a smoke test)

Runs with the plain interpreter of the machine from the repo root (torch >= 2.4, torchvision,
numpy, Pillow, tqdm, tensorboard; no network, no extra packages) on data it generates itself in a
temporary folder: a CIFAR-100 in the official pickle format, random-init teachers in the published
checkpoint format, and a small ImageNet-layout JPEG tree. Checks, each the real training step
(``helper.loop.train_step`` through bench/throughput.py):

- kd resnet32x4 -> resnet8x4, fast loader on the device: the first version's step (``seed``),
  fp32 eager channels_last (``eager``), the default flags of a full run (``default``: channels_last
  and torch.compile), bf16 autocast (compiled), fp16 autocast with GradScaler (eager);
- crd (compiled, memory banks on the device, negatives sampled there) and rrd (eager);
- kd reading a teacher bank held in device memory (``bank``), and the bank's build rate against
  the teacher forward of a training step (bench/bank.py);
- ImageNet layout with ``--decode device`` (nvjpeg on CUDA), tv_resnet34 -> tv_resnet18 at 64 px;
- a 2-epoch train_student.py run, and the same run stopped after epoch 1 and resumed (``--resume
  auto``); whether the two end bit-identical is reported (on a GPU, cuDNN may choose
  non-deterministic kernels, so a difference there is reported, not failed).

Prints one table (img/s, ms/step, data wait %, peak memory), and the design targets for kd
resnet32x4 -> resnet8x4 on a GPU (< 4 ms/step at batch 64, data wait < 2%). Any error is printed
with its traceback and makes the script exit with status 1 after the table.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import throughput  # first: puts the repo root and tests/ on sys.path
from report import table

import torch  # noqa: E402

from helper.run_folder import last_checkpoint, run_folder  # noqa: E402
from training import student as train_student  # noqa: E402
from datagen import write_cifar100, write_imagenet  # noqa: E402
from helpers import write_published_teacher  # noqa: E402

TARGET_MS_PER_STEP = 4.0     # kd resnet32x4 -> resnet8x4, batch 64, default flags, one modern GPU
TARGET_DATA_WAIT = 0.02
HEADER = ["check", "config", "resolved", "img/s", "ms/step", "data wait %", "peak mem (MiB)", "status"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) | cuda:N | cpu")
    parser.add_argument("--quick", action="store_true", help="tiny models and few steps (smoke run, e.g. on a CPU)")
    parser.add_argument("--skip", default="", help="comma list of checks to skip: kd,crd_rrd,imagenet,resume")
    parser.add_argument("--no_compile", action="store_true", help="run the compiled configurations eagerly")
    parser.add_argument("--keep", default=None, help="keep the generated data and runs in this folder")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to PyTorch (use --device cpu --quick for a smoke run)")
    return args


def sizes(args: argparse.Namespace) -> dict[str, Any]:
    """Models, data sizes and step counts of the full check (GPU) and of --quick."""
    if args.quick:
        # batch 8 and 2 steps: fp16 autocast on a CPU runs ~70x slower than fp32 (a smoke run, not a measurement)
        return {"teacher": "resnet8", "student": "resnet8", "n_train": 1_000, "nce_k": 256, "batch": 8,
                "steps": 2, "warmup": 1, "rounds": 2, "imagenet": (4, 8, 8)}
    return {"teacher": "resnet32x4", "student": "resnet8x4", "n_train": 20_000, "nce_k": 16384, "batch": 64,
            "steps": 200, "warmup": 30, "rounds": 2, "imagenet": (8, 64, 32)}


def compiled(args: argparse.Namespace, config: str) -> str:
    return f"{config}+compile=off" if args.no_compile else config


def throughput_rows(args: argparse.Namespace, method: str, configs: list[str]) -> list[list[Any]]:
    """Time ``configs`` of ``method`` on the teacher/student pair through bench/throughput.py."""
    size = sizes(args)
    argv = ["--distill", method, "--model_t", size["teacher"], "--model_s", size["student"], "--device", args.device,
            "--batch_size", str(size["batch"]), "--n_train", str(size["n_train"]), "--nce_k", str(size["nce_k"]),
            "--steps", str(size["steps"]), "--warmup", str(size["warmup"]), "--rounds", str(size["rounds"]),
            "--configs", ",".join(configs)]
    result = throughput.run(throughput.parse_args(argv))
    return [record_row(f"{method} {record['pair']}", record) for record in result["records"]]


def record_row(check: str, record: dict[str, Any], status: str = "ok") -> list[Any]:
    resolved = "/".join(["fp32" if record["amp"] == "none" else record["amp"],
                         "CL" if record["channels_last"] else "NCHW", "compiled" if record["compile"] else "eager"]
                        + (["seed step"] if record["seed_step"] else []))
    ms_per_step = 1000 * record["batch_size"] / record["images_per_s"]
    return [check, record["label"], resolved, f"{record['images_per_s']:.0f}", f"{ms_per_step:.2f}",
            f"{100 * record['data_wait_fraction']:.2f}", f"{record['peak_memory_mib']:.0f}", status]


def check_kd(args: argparse.Namespace, folder: Path) -> list[list[Any]]:
    return throughput_rows(args, "kd", ["seed", "eager", compiled(args, "default"), compiled(args, "bf16"),
                                        "fp16+compile=off"])


def check_crd_rrd(args: argparse.Namespace, folder: Path) -> list[list[Any]]:
    return throughput_rows(args, "crd", [compiled(args, "default")]) + throughput_rows(args, "rrd", ["eager"])


def torchvision_teacher(folder: Path, classes: int) -> Path:
    """A random-init torchvision ResNet-34 state_dict (BatchNorm statistics calibrated on noise)."""
    from models import imagenet_model_dict

    torch.manual_seed(0)
    model = imagenet_model_dict["tv_resnet34"](num_classes=classes)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None
        model(torch.randn(16, 3, 64, 64))
    path = folder / "hub" / "resnet34-generated.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def check_imagenet(args: argparse.Namespace, folder: Path) -> list[list[Any]]:
    """tv_resnet34 -> tv_resnet18 on a generated JPEG tree, batched decoding on the device."""
    classes, per_class, batch = sizes(args)["imagenet"]
    data = write_imagenet(folder / "imagenet_data", n_classes=classes, n_train_per_class=per_class,
                          n_val_per_class=2)
    teacher = torchvision_teacher(folder, classes)
    steps = max(2, (classes * per_class) // batch - 1)
    argv = ["--dataset", "imagenet", "--data_folder", str(data), "--path_t", str(teacher), "--model_s", "tv_resnet18",
            "--image_size", "64", "--batch_size", str(batch), "--decode", "device", "--num_workers", "2",
            "--device", args.device, "--distill", "kd", "--save_folder", str(folder / "save"), "--no_progress",
            "--compile", "off"]
    variant = throughput.variant_from_argv(argv, "decode device", {})
    (record,) = throughput.measure([variant], steps, 1, 1)
    return [record_row("kd imagenet tv_resnet34->tv_resnet18 64px", record)]


def check_resume(args: argparse.Namespace, folder: Path) -> list[list[Any]]:
    """train_student.py for 2 epochs, and for 1 epoch then --resume auto to 2: both must finish."""
    data = write_cifar100(folder / "resume_data", n_train=640 if args.quick else 3_200, n_test=200, seed=1)
    teacher = write_published_teacher(folder / "resume_teacher", "resnet8")
    common = ["--path_t", str(teacher), "--distill", "crd", "--model_s", "resnet8", "--batch_size", "64",
              "--data_folder", str(data), "--nce_k", "256", "--device", args.device, "--no_progress",
              "--lr_decay_epochs", "1", "--seed", "3"]
    runs = {}
    for name, plan in (("straight", [2]), ("resumed", [1, 2])):
        save = folder / f"resume_{name}"
        started = time.perf_counter()
        for epochs in plan:
            extra = ["--resume", "auto"] if epochs == 2 and len(plan) == 2 else []
            train_student.main([*common, "--save_folder", str(save), "--epochs", str(epochs), *extra])
        runs[name] = (save, time.perf_counter() - started)
    states = [torch.load(last_checkpoint(next(run_folder(save, "student", "").iterdir()), "resnet8"),
                         map_location="cpu", weights_only=True) for save, _ in runs.values()]
    assert all(state["epoch"] == 2 for state in states), "a run did not reach epoch 2"
    same = all(torch.equal(value, states[1]["model"][key]) for key, value in states[0]["model"].items())
    note = "resumed == straight (bit-identical)" if same else "resumed != straight (non-deterministic kernels?)"
    return [["crd resnet8->resnet8 2 epochs + resume", "default (short run)", "-", "-", "-", "-", "-",
             f"ok, {runs['straight'][1]:.0f}s + {runs['resumed'][1]:.0f}s; {note}"]]


def check_bank(args: argparse.Namespace, folder: Path) -> list[list[Any]]:
    """kd with the teacher bank in device memory beside the default step, and the bank's build rate
    against a training step's teacher forward (bench/bank.py)."""
    import bank

    rows = throughput_rows(args, "kd", [compiled(args, "default"), "bank"])
    size = sizes(args)
    rate = bank.build_rate(size["teacher"], torch.device(args.device), 1 if args.quick else 16, 1 if args.quick else 2,
                           compile="off" if args.no_compile else "auto", n_train=size["n_train"])
    rows.append([f"bank build {size['teacher']}", "build", "fp32/eager", f"{rate['build_img_s']:.0f}", "", "", "",
                 f"ok; step teacher {rate['step_teacher_img_s']:.0f} img/s; build / teacher time of a 240-epoch run "
                 f"{rate['ratio']:.2f}x"])
    return rows


CHECKS: dict[str, Callable[[argparse.Namespace, Path], list[list[Any]]]] = {
    "kd": check_kd, "crd_rrd": check_crd_rrd, "bank": check_bank, "imagenet": check_imagenet,
    "resume": check_resume}


def environment(device: torch.device) -> str:
    line = f"torch {torch.__version__}, device {throughput.device_name(device)}"
    if device.type == "cuda":
        capability = ".".join(map(str, torch.cuda.get_device_capability(device)))
        line += f" (compute capability {capability}, cuDNN {torch.backends.cudnn.version()})"
    return line


def targets(rows: list[list[Any]]) -> str:
    """The GPU design targets for kd resnet32x4 -> resnet8x4 with the default flags."""
    default = next((r for r in rows if r[0] == "kd resnet32x4->resnet8x4" and r[1].startswith("default")), None)
    if default is None:
        return "targets: kd resnet32x4->resnet8x4 default not measured"
    ms, wait = float(default[4]), float(default[5]) / 100
    return (f"targets (kd resnet32x4->resnet8x4, default flags, batch 64): {ms:.2f} ms/step "
            f"({'met' if ms < TARGET_MS_PER_STEP else 'NOT met'}: < {TARGET_MS_PER_STEP}), data wait "
            f"{100 * wait:.2f}% ({'met' if wait < TARGET_DATA_WAIT else 'NOT met'}: < {100 * TARGET_DATA_WAIT:.0f}%)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    skip = {name for name in args.skip.split(",") if name}
    with tempfile.TemporaryDirectory(prefix="distillers-gpu-check-") as scratch:
        folder = Path(args.keep or scratch)
        os.environ["DISTILLERS_BENCH_CACHE"] = str(folder / "bench_cache")
        print(environment(torch.device(args.device)), flush=True)
        rows, failures = [], []
        for name, check in CHECKS.items():
            if name in skip:
                continue
            check_started = time.perf_counter()
            try:
                rows += check(args, folder)
            except (Exception, SystemExit) as error:  # report every failing path, then fail
                traceback.print_exc()
                failures.append(name)
                rows.append([name, "-", "-", "-", "-", "-", "-", f"FAILED: {type(error).__name__}: {error}"[:160]])
            print(f"[{name}] {time.perf_counter() - check_started:.0f}s", file=sys.stderr, flush=True)
    print(table(HEADER, rows))
    if not args.quick and args.device.startswith("cuda"):
        print(targets(rows))
    print(f"total {time.perf_counter() - started:.0f}s")
    if failures:
        print(f"FAILED: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
