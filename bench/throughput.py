"""Training-step throughput of train_student.py's own code path (training/student.py), on generated CIFAR-100.

    python bench/throughput.py --distill kd --model_t resnet56 --model_s resnet20 --device cpu \
        --configs default,seed,eager,bf16 --steps 36 --warmup 5 [--json-out FILE]

Builds ``opt`` with ``training.student.parse_args`` (a random-init teacher checkpoint and a generated
CIFAR-100 in the official pickle format, both cached under the system temp folder), then
``helper.runner.setup`` / ``dataset.build.build_data``, the run's models, teacher and main-stage task
(``training.student.assemble``, ``StudentRun.main_task``), and runs ``helper.loop.train_step`` (plus the loop's per-step
``EpochMeters.update``) on batches of ``train_loader.iterate(epoch)``: the training loop minus the
progress bar, validation and checkpoints.

Each configuration (``--configs``: flag overrides such as --channels_last off, --compile off, --amp
bf16, or 'seed', the step of this repo's first version) gets its own models from the same seed; all
run in interleaved rounds in one process, so that machine load hits them alike. Prints one JSON line
per configuration, then the throughput ratios to the 'default' configuration.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the repo's packages, and tests/ for the data generators
os.environ.setdefault("DISTILLERS_OFFLINE", "1")  # generated data only: never try a download

import numpy as np  # noqa: E402
import torch  # noqa: E402

from training import student as train_student  # noqa: E402
from distiller_zoo import DistillTask  # noqa: E402
from distiller_zoo.base import Features  # noqa: E402
from datagen import write_cifar100  # noqa: E402
from helper.loop import EpochMeters, autocast_factory, train_step  # noqa: E402
from helper.options import cpu_count  # noqa: E402
from dataset.build import build_data  # noqa: E402
from dataset.teacher_bank import TeacherBank  # noqa: E402
from helper.runner import resolve_speed_options, runs_compiled, setup  # noqa: E402
from helpers import write_published_teacher  # noqa: E402

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
DEFAULT_N_TRAIN = 50_000  # CIFAR-100's size: CRD's default nce_k 16384 needs > 16,384 other-class samples
PREFETCH_FACTOR = 2       # torch DataLoader default: batches queued per classic worker


# ---------------------------------------------------------------------------------------------
# generated inputs (cached, written atomically so concurrent benchmark processes can share them)

def cache_root() -> Path:
    """Where generated datasets and teachers are kept ($DISTILLERS_BENCH_CACHE or <tmp>/distillers-bench)."""
    root = Path(os.environ.get("DISTILLERS_BENCH_CACHE", Path(tempfile.gettempdir()) / "distillers-bench"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def _publish(partial: Path, final: Path) -> None:
    """Rename a finished folder into place; if another process won the race, keep theirs."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(partial, final)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)


def ensure_cifar100(n_train: int, n_test: int = 200, seed: int = 0) -> Path:
    """A data_folder holding a generated CIFAR-100 (official pickles) with ``n_train`` training images."""
    folder = cache_root() / f"cifar100_train{n_train}_test{n_test}_seed{seed}"
    if not folder.is_dir():
        partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=cache_root()))
        write_cifar100(partial, n_train=n_train, n_test=n_test, seed=seed)
        _publish(partial, folder)
    return folder


def ensure_teacher(arch: str) -> Path:
    """A random-init teacher in the published checkpoint format: <cache>/teachers/models/<arch>_vanilla/..."""
    final = cache_root() / "teachers" / "models" / f"{arch}_vanilla"
    if not final.is_dir():
        partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=cache_root()))
        write_published_teacher(partial, arch)
        _publish(partial / "models" / f"{arch}_vanilla", final)
        shutil.rmtree(partial, ignore_errors=True)
    return final / "ckpt_epoch_240.pth"


# ---------------------------------------------------------------------------------------------
# machine description and memory

def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (or platform.processor())."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def cpu_flags() -> set[str]:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def device_name(device: torch.device) -> str:
    """'NVIDIA H100 ...' on CUDA; on CPU the model, core count and SIMD level (bf16 support noted)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    bf16 = ", avx512_bf16" if "avx512_bf16" in cpu_flags() else ""
    return f"{cpu_model()} ({cpu_count()} cores, {torch.backends.cpu.get_cpu_capability()}{bf16})"


def load_average() -> list[float]:
    """1/5/15-minute load averages (empty where unavailable)."""
    with contextlib.suppress(OSError, AttributeError):
        return [round(value, 2) for value in os.getloadavg()]
    return []


class PeakMemory:
    """Peak memory over a window: CUDA max_memory_allocated, or the process's peak RSS (VmHWM, reset
    through /proc/self/clear_refs; lifetime ru_maxrss where that is not possible). DataLoader
    worker processes are not included."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda_max_memory_allocated" if device.type == "cuda" else "process_peak_rss"

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.kind = "process_lifetime_max_rss"

    def peak_mib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.kind == "process_peak_rss":
            with contextlib.suppress(OSError, ValueError):
                for line in Path("/proc/self/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: user, nice, system, irq, softirq)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    """CPU seconds of this process plus its live children (the classic loader's workers)."""
    ticks = 0
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if stat.parent.name == me or fields[1] == me:  # fields[1]: parent pid
                ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


class ForeignLoad:
    """CPU time other processes took while we measured, as a fraction of all cores (Linux /proc)."""

    def __init__(self) -> None:
        self.available = Path("/proc/stat").exists()
        self.foreign = self.wall = 0.0

    @contextlib.contextmanager
    def window(self) -> Iterator[None]:
        if not self.available:
            yield
            return
        busy, own, started = _busy_seconds(), _own_seconds(), time.perf_counter()
        yield
        self.wall += time.perf_counter() - started
        self.foreign += max(0.0, (_busy_seconds() - busy) - (_own_seconds() - own))

    def fraction(self) -> float | None:
        return round(self.foreign / (self.wall * cpu_count()), 3) if self.available and self.wall else None


def wait_for_idle(timeout_s: float, threshold: float = 0.1, window_s: float = 3.0) -> float | None:
    """Wait (at most ``timeout_s``) until other processes use less than ``threshold`` of the cores over a
    ``window_s`` window; returns the last busy fraction seen (None where /proc/stat is missing)."""
    if not Path("/proc/stat").exists():
        return None
    deadline = time.monotonic() + timeout_s
    while True:
        load = ForeignLoad()
        with load.window():
            time.sleep(window_s)
        if load.fraction() < threshold or time.monotonic() >= deadline:
            return load.fraction()


def conv_ceiling_gflops(device: torch.device, repeats: int = 5) -> float:
    """fp32 GFLOP/s of one large 3x3 convolution (64 x 256 x 16 x 16, 256 -> 256 channels, NCHW,
    inference): what this machine's convolutions can reach right now (an unloaded 2-vCPU AMD Zen 5 VM
    reached ~390 in 2026-11; the same VM type shared with other jobs, about half of that)."""
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).to(device).eval()
    images = torch.randn(64, 256, 16, 16, device=device)
    flop = 2 * 64 * 256 * 256 * 9 * 16 * 16
    times = []
    with torch.inference_mode():
        for index in range(repeats + 1):
            synchronize(device)
            started = time.perf_counter()
            conv(images)
            synchronize(device)
            if index:  # the first call builds the oneDNN/cuDNN plan
                times.append(time.perf_counter() - started)
    return round(flop / statistics.median(times) / 1e9, 1)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------
# the pipeline under test

@dataclass
class Variant:
    """One configuration to time: its own task (student, teacher, method), optimizer and batches."""

    label: str
    settings: dict[str, Any]          # what the result line reports about this variant
    task: Any
    optimizer: torch.optim.Optimizer
    batches: Iterator[Batch]
    device: torch.device
    batch_size: int
    meters: EpochMeters               # fit()'s per-step device-side meters
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None
    scaler: torch.amp.GradScaler | None = None
    round_warmup: int = 0             # untimed steps at the start of every round (classic: drain prefetch)
    steps_done: int = 0
    warmup_seconds: list[float] = field(default_factory=list)

    def step(self) -> float:
        """One training step exactly as fit() runs it; returns the seconds spent waiting for the batch."""
        started = time.perf_counter()
        images, labels, index = next(self.batches)
        waited = time.perf_counter() - started
        output = train_step(self.task, self.optimizer, images, labels, index, self.autocast, self.scaler)
        if self.settings["compile"] and not runs_compiled(self.task.model):  # torch.compile fell back
            self.settings["compile"] = False
        self.meters.update(output, labels, self.steps_done)
        self.steps_done += 1
        return waited


def endless(loader: Any) -> Iterator[Batch]:
    """Batches of epoch 1, 2, ... of ``loader`` (train_loader.iterate), without end."""
    epoch = 1
    while True:
        yield from loader.iterate(epoch)
        epoch += 1


class SeedStepTask(DistillTask):
    """The training step as the first version of this repo ran it, for comparison: the teacher
    unfolded, its features cloned out of ``torch.inference_mode``, CRD's memory banks updated (and
    therefore snapshotted) inside the forward."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        contrast = getattr(getattr(self.method, "criterion", None), "contrast", None)
        if contrast is not None and hasattr(contrast, "defer_update"):
            contrast.defer_update = False

    def _forward(self, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor, progress: Any) -> Any:
        method = self.method
        if method.uses_features and method.has_method_loss:
            student_feats, student_logits = self.model(images, is_feat=True, preact=method.uses_preact)
            with torch.inference_mode():
                teacher_feats, teacher_logits = self.teacher(images, is_feat=True, preact=method.uses_preact)
            teacher_feats = [f.clone() for f in teacher_feats]
        else:
            student_feats, student_logits = [], self.model(images)
            with torch.inference_mode():
                teacher_logits = self.teacher(images)
            teacher_feats = []
        return Features(student_feats, teacher_feats, student_logits, teacher_logits.clone(), labels, index, progress)


# Named configurations (--configs): overrides of the training flags, plus 'step': 'seed' for SeedStepTask.
PRESETS: dict[str, dict[str, str]] = {
    "default": {},                                             # what a user gets: --channels_last/--compile auto
    "seed": {"channels_last": "off", "compile": "off", "step": "seed"},  # the first version's step and flags
    "eager": {"compile": "off"},
    "nchw": {"channels_last": "off"},
    "bf16": {"amp": "bf16"},
    "fp16": {"amp": "fp16"},
    "classic": {"loader": "classic"},
    "bank": {"bank": "on"},  # the teacher's outputs read from a teacher bank (full-size, see placeholder_bank)
}
CONFIG_KEYS = {"channels_last": ("auto", "on", "off"), "compile": ("auto", "on", "off"),
               "amp": ("none", "bf16", "fp16"), "loader": ("fast", "classic"), "step": ("current", "seed"), "bank": ("on", "off")}


def parse_config(text: str) -> dict[str, str]:
    """'default', a preset name, or tokens like 'compile=off+amp=bf16' (a preset may start the list)."""
    settings: dict[str, str] = {}
    for token in text.split("+"):
        if token in PRESETS:
            settings.update(PRESETS[token])
            continue
        key, _, value = token.partition("=")
        if value not in CONFIG_KEYS.get(key, ()):
            raise SystemExit(f"bench: unknown configuration '{token}' in '{text}'; use a preset "
                             f"({', '.join(PRESETS)}) or key=value with key in {', '.join(CONFIG_KEYS)}")
        settings[key] = value
    return settings


def student_argv(args: argparse.Namespace, config: dict[str, str]) -> list[str]:
    """The train_student.py command line for this benchmark's settings and one configuration."""
    argv = ["--path_t", str(ensure_teacher(args.model_t)), "--distill", args.distill, "--model_s", args.model_s,
            "--batch_size", str(args.batch_size), "--data_folder", str(ensure_cifar100(args.n_train)),
            "--save_folder", str(cache_root() / "save"), "--device", args.device,
            "--loader", config.get("loader", args.loader), "--amp", config.get("amp", args.amp),
            "--channels_last", config.get("channels_last", args.channels_last),
            "--compile", config.get("compile", args.compile), "--epochs", str(args.epochs),
            "--num_workers", str(args.num_workers), "--nce_k", str(args.nce_k), "--trial", "bench",
            "--seed", "0", "--no_progress"]
    return argv


def build_variant(args: argparse.Namespace, label: str, shared: dict[Any, Any]) -> Variant:
    """One configuration of the benchmark's method and pair (see ``variant_from_argv``)."""
    config = parse_config(label)
    return variant_from_argv(student_argv(args, config), label, shared, seed_step=config.get("step") == "seed",
                             threads=args.threads, bank=config.get("bank") == "on")


def placeholder_bank(opt: argparse.Namespace, method: Any, data: Any, teacher: torch.nn.Module,
                     device: torch.device) -> TeacherBank:
    """A teacher bank of the run's full size and layout (memory-mapped float32 files in the bench cache)
    holding placeholder values: a step's cost does not depend on the values, and building a real bank of
    the 50,000-image split takes 162 teacher passes over it (its rate is timed by bench/bank.py)."""
    from dataset.teacher_bank import VIEWS_PER_IMAGE

    widths = {"logits": data.num_classes}
    if method.teacher_reads == "embedding":
        widths["embedding"] = int(train_student.feature_shapes(teacher, False, device)[-1][1])
    arrays = {}
    for name, width in widths.items():
        path = cache_root() / f"bank_placeholder_{data.num_train}x{VIEWS_PER_IMAGE}x{width}.npy"
        if not path.exists():
            partial = path.with_suffix(f".{os.getpid()}.partial")
            values = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32,
                                               shape=(data.num_train, VIEWS_PER_IMAGE, width))
            for start in range(0, data.num_train, 1024):  # random values, written in slices
                values[start:start + 1024] = np.random.default_rng(start).standard_normal(
                    values[start:start + 1024].shape, dtype=np.float32)
            values.flush()
            del values
            _publish(partial, path)
        arrays[name] = torch.from_numpy(np.load(path, mmap_mode="r+"))
    return TeacherBank(path.parent, None, arrays).to(device)


def variant_from_argv(argv: list[str], label: str, shared: dict[Any, Any], seed_step: bool = False,
                      threads: int = 0, bank: bool = False) -> Variant:
    """The training step of ``train_student.py ARGV``: its own models (same seed: same initial weights),
    optimizer and batches; the dataset is loaded once per (loader, memory format) and kept in ``shared``."""
    opt = train_student.parse_args(argv)
    device = setup(opt)
    if threads:
        torch.set_num_threads(threads)
    key = (opt.dataset, opt.data_folder, opt.loader, opt.channels_last, opt.batch_size, bank)
    if key not in shared:
        shared[key] = build_data(opt, device)
    else:
        resolve_speed_options(opt, device, len(shared[key][1]) * opt.epochs)
    data, train_loader, _ = shared[key]
    run = train_student.assemble(opt, None, data, train_loader, device, open_bank=(
        lambda teacher, method: placeholder_bank(opt, method, data, teacher, device) if bank else None))
    if seed_step:  # the first version's step: the teacher unfolded
        task, optimizer = replace(run, forward_teacher=run.teacher).main_task(SeedStepTask)
    else:
        task, optimizer = run.main_task()
    task.train_mode()
    settings = {"device": device_name(device), "device_type": device.type, "torch": torch.__version__,
                "threads": torch.get_num_threads(), "method": opt.distill, "pair": f"{opt.model_t}->{opt.model_s}",
                "config": label, "compile": bool(opt.compile), "channels_last": bool(opt.channels_last),
                "seed_step": seed_step, "nce_k": opt.nce_k, "n_train": int(data.train_labels.numel()),
                "batch_size": opt.batch_size, "loader": opt.loader, "amp": opt.amp, "dataset": opt.dataset,
                "num_workers": opt.num_workers if opt.loader == "classic" else 0, "teacher_bank": bank}
    drain = PREFETCH_FACTOR * opt.num_workers if opt.loader == "classic" else 0
    return Variant(label, settings, task, optimizer, endless(train_loader), device, opt.batch_size,
                   EpochMeters(device), autocast_factory(device, opt.amp),
                   torch.amp.GradScaler(device.type) if opt.amp == "fp16" else None, drain)


# ---------------------------------------------------------------------------------------------
# measurement

@dataclass
class Timings:
    """Everything measured for one variant over its timed rounds."""

    step_seconds: list[float] = field(default_factory=list)
    wait_seconds: list[float] = field(default_factory=list)
    round_seconds: list[float] = field(default_factory=list)
    round_images: list[int] = field(default_factory=list)
    peak_mib: float = 0.0
    foreign: ForeignLoad = field(default_factory=ForeignLoad)


def time_round(variant: Variant, steps: int, timings: Timings, memory: PeakMemory, sync_steps: bool) -> None:
    """``steps`` timed steps after the variant's round warm-up; device synchronised at the round edges
    (and at every step boundary with ``sync_steps``, which removes the host/device overlap)."""
    for _ in range(variant.round_warmup):
        variant.step()
    synchronize(variant.device)
    memory.reset()
    with timings.foreign.window():
        round_start = step_start = time.perf_counter()
        for _ in range(steps):
            timings.wait_seconds.append(variant.step())
            if sync_steps:
                synchronize(variant.device)
            now = time.perf_counter()
            timings.step_seconds.append(now - step_start)
            step_start = now
        synchronize(variant.device)
        end = time.perf_counter()
    timings.step_seconds[-1] += end - step_start  # the last step absorbs the queued device work
    timings.round_seconds.append(end - round_start)
    timings.round_images.append(steps * variant.batch_size)
    timings.peak_mib = max(timings.peak_mib, memory.peak_mib())


def split_steps(steps: int, rounds: int) -> list[int]:
    """``steps`` timed steps spread over ``rounds`` rounds as evenly as possible (each round >= 1)."""
    return [max(1, steps // rounds + (r < steps % rounds)) for r in range(rounds)]


def measure(variants: list[Variant], steps: int | dict[str, int], warmup: int, rounds: int,
            sync_steps: bool = False) -> list[dict[str, Any]]:
    """Warm every variant up, then time ``rounds`` interleaved rounds (A B A B ...) sharing ``steps``
    timed steps per variant (an int, or per variant label); returns one result record per variant."""
    memory = PeakMemory(variants[0].device)
    load_before = load_average()
    ceiling = conv_ceiling_gflops(variants[0].device)
    for variant in variants:  # the first steps of a compiled variant compile
        for _ in range(warmup):
            started = time.perf_counter()
            variant.step()
            synchronize(variant.device)
            variant.warmup_seconds.append(time.perf_counter() - started)
    plan = {v.label: split_steps(steps[v.label] if isinstance(steps, dict) else steps, rounds) for v in variants}
    timings = {variant.label: Timings() for variant in variants}
    for round_index in range(rounds):
        for variant in variants:
            time_round(variant, plan[variant.label][round_index], timings[variant.label], memory, sync_steps)
    load_after = load_average()
    records = []
    for variant in variants:
        t = timings[variant.label]
        wall = sum(t.round_seconds)
        records.append(dict(
            variant.settings, label=variant.label, steps=len(t.step_seconds), warmup=warmup, rounds=rounds,
            images_per_s=round(sum(t.round_images) / wall, 1),
            round_images_per_s=[round(n / s, 1) for n, s in zip(t.round_images, t.round_seconds)],
            ms_per_step_median=round(1000 * statistics.median(t.step_seconds), 2),
            data_wait_fraction=round(sum(t.wait_seconds) / wall, 4),
            peak_memory_mib=round(t.peak_mib, 1), peak_memory_kind=memory.kind,
            sync_steps=sync_steps, loadavg_before=load_before, loadavg_after=load_after,
            foreign_cpu_fraction=t.foreign.fraction(), conv_ceiling_gflops=ceiling,
            first_step_s=round(variant.warmup_seconds[0], 2) if variant.warmup_seconds else None,
            warmup_s=round(sum(variant.warmup_seconds), 2),
            measured_at=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")))
    return records


def ratio(numerator: dict[str, Any], denominator: dict[str, Any]) -> dict[str, Any]:
    """Throughput ratio of two records: overall, and the median of the per-round ratios (robust to load drift)."""
    per_round = [a / b for a, b in zip(numerator["round_images_per_s"], denominator["round_images_per_s"])]
    return {"ratio": f"{numerator['label']}/{denominator['label']}",
            "value": round(numerator["images_per_s"] / denominator["images_per_s"], 3),
            "round_median": round(statistics.median(per_round), 3)}


# ---------------------------------------------------------------------------------------------
# command line

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--distill", default="kd", help="method key (main stage only)")
    parser.add_argument("--model_t", default="resnet32x4", help="teacher arch (random-init checkpoint is generated)")
    parser.add_argument("--model_s", default="resnet8x4")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--configs", default="default",
                        help="comma list of configurations timed interleaved, each with its own models: presets "
                             f"({', '.join(PRESETS)}) or '+'-joined key=value ({', '.join(CONFIG_KEYS)}), e.g. "
                             "default,seed,eager,bf16 or compile=off+amp=bf16")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per configuration (split over --rounds)")
    parser.add_argument("--warmup", type=int, default=10,
                        help="untimed steps per configuration before timing (must cover compilation)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds (default 3 with several configurations, else 1)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--loader", choices=["fast", "classic"], default="fast")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--channels_last", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--epochs", type=int, default=240,
                        help="run length that --compile auto judges (the benchmark itself runs --steps)")
    parser.add_argument("--num_workers", type=int, default=min(8, cpu_count()), help="classic loader workers")
    parser.add_argument("--nce_k", type=int, default=16384)
    parser.add_argument("--n_train", type=int, default=DEFAULT_N_TRAIN, help="generated training images")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: one per core, as training)")
    parser.add_argument("--sync_steps", action="store_true",
                        help="synchronise the device at every step (exact per-step times, no host/device overlap)")
    parser.add_argument("--json-out", dest="json_out", default=None, help="also write all records to this file")
    args = parser.parse_args(argv)
    args.config_list = [c for c in args.configs.split(",") if c]
    for config in args.config_list:
        parse_config(config)
    if args.rounds is None:
        args.rounds = 3 if len(args.config_list) > 1 else 1
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the configurations, measure them interleaved, and return {'records': [...], 'ratios': ...}
    with each configuration's throughput over the 'default' one's (or the first one's)."""
    shared: dict[Any, Any] = {}
    variants = [build_variant(args, label, shared) for label in args.config_list]
    records = measure(variants, args.steps, args.warmup, args.rounds, args.sync_steps)
    base = next((r for r in records if r["label"] == "default"), records[0])
    return {"records": records, "ratios": {r["label"]: ratio(r, base) for r in records}}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    for record in result["records"]:
        print(json.dumps(record), flush=True)
    print(json.dumps(result["ratios"]), flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
