"""The offline main job (`make demo`): train a teacher on the bundled `digits` data, distil
students with several methods, print an accuracy table, and draw what distillation did (analyze.py).

The runs go to worker processes (two on a machine with two or more cores, each on its share of the
cores, as `WORKERS=2` sweeps do): the from-scratch student trains beside the teacher, the distilled
students two at a time after it. Each run's output is in save/demo/logs/<run>.log; everything goes to
save/demo/ (recreated on each run).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import importlib
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from helper.run_folder import last_checkpoint, run_folder, teacher_folder_name  # noqa: E402
from training import ENTRY_MODULES  # noqa: E402

TEACHER, STUDENT = "resnet20", "resnet8"
# (row label, --distill, extra flags); -a/-b as in the papers' tables (the methods' default weights).
STUDENTS = [
    ("KD", "kd", ["-r", "0.1", "-a", "0.9", "-b", "0"]),
    ("CRD", "crd", ["-a", "0", "-b", "0.8", "--nce_k", "1024"]),
    ("DCD", "dcd", ["-a", "0", "-b", "1"]),
    ("DCD+KD", "dcd", ["-a", "1", "-b", "1"]),
    ("RRD", "rrd", ["-a", "0", "-b", "1", "--nce_k", "1024"]),
    ("DKD", "dkd", ["-a", "0", "-b", "1", "--dkd_warmup", "2"]),
]


def usable_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def cpu_shares(workers: int) -> list[set[int]]:
    """The cores of this process split among ``workers`` (every worker gets at least one)."""
    cores = usable_cores()
    return [set(cores[index::workers]) or {cores[index % len(cores)]} for index in range(workers)] if cores else []


def start_worker(counter: multiprocessing.Value, shares: list[set[int]]) -> None:
    """Pin a new worker to its share of the cores (its runs then use that many threads)."""
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    if shares:
        os.sched_setaffinity(0, shares[index % len(shares)])


def train(script: str, argv: list[str], log: Path) -> tuple[float, float]:
    """Run ``script``'s main(argv) in this worker, its output in ``log``; (best top-1, seconds)."""
    module = importlib.import_module(ENTRY_MODULES[f"{script}.py"])
    started = time.perf_counter()
    with open(log, "w") as handle, contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
        accuracy = module.main(argv)
    return accuracy, time.perf_counter() - started


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher_epochs", type=int, default=10)
    parser.add_argument("--student_epochs", type=int, default=8)
    parser.add_argument("--save_folder", default=str(ROOT / "save" / "demo"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=min(2, len(usable_cores()) or 1),
                        help="runs at once (default: 2 on a machine with 2 or more cores)")
    parser.add_argument("--no_analysis", action="store_true", help="stop after the table")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    save = Path(args.save_folder)
    shutil.rmtree(save, ignore_errors=True)
    (save / "logs").mkdir(parents=True)
    common = ["--dataset", "digits", "--save_folder", str(save), "--device", args.device, "--no_progress",
              "--print_freq", "10"]

    def schedule(epochs: int) -> list[str]:
        milestones = sorted({max(int(epochs * 0.6), 1), max(int(epochs * 0.8), 1)})  # lr / 10 at 60% and 80%
        return ["--epochs", str(epochs), "--lr_decay_epochs", ",".join(map(str, milestones)), "--save_freq", str(epochs)]

    path_t = last_checkpoint(run_folder(save, "vanilla", teacher_folder_name(TEACHER, "digits", "0")), TEACHER)
    runs = {"Teacher": ("train_teacher", ["--model", TEACHER, *common, *schedule(args.teacher_epochs)]),
            "Student from scratch": ("train_teacher", ["--model", STUDENT, *common, *schedule(args.student_epochs)])}
    for label, key, weights in STUDENTS:
        runs[label] = ("train_student", ["--path_t", str(path_t), "--distill", key, "--model_s", STUDENT, *weights,
                                         *common, *schedule(args.student_epochs)])
    started = time.perf_counter()
    results = run_all(runs, save / "logs", args.workers)
    teacher_last = last_accuracy(path_t)
    print(f"\nDemo on digits ({TEACHER} -> {STUDENT}), best test top-1 (%); the students distil from the teacher's "
          f"last epoch ({teacher_last:.2f}):\n")
    print(f"| {'run':<20} | {'model':<9} | {'top-1':>6} | {'time':>6} |")
    print(f"|{'-' * 22}|{'-' * 11}|{'-' * 8}|{'-' * 8}|")
    for label, (accuracy, seconds) in results.items():
        model = TEACHER if label == "Teacher" else STUDENT
        print(f"| {label:<20} | {model:<9} | {accuracy:6.2f} | {seconds:5.0f}s |")
    print(f"\nRuns: {time.perf_counter() - started:.0f}s with {args.workers} worker(s); logs in {save / 'logs'}, "
          f"runs and metrics.csv files in {save}")
    if not args.no_analysis:
        import analyze

        students = [run_folder(save, "vanilla", teacher_folder_name(STUDENT, "digits", "0")),
                    *sorted(run_folder(save, "student", "").glob("*"))]
        analyze.main(["--path_t", str(path_t), "--path_s", *map(str, students), "--dataset", "digits",
                      "--device", args.device, "--out", str(save / "analysis")])


def run_all(runs: dict[str, tuple[str, list[str]]], logs: Path, workers: int) -> dict[str, tuple[float, float]]:
    """Train the teacher and the from-scratch student, then (the teacher done) the distilled students,
    ``workers`` at a time; one line per finished run. Returns {label: (best top-1, seconds)}."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no OpenMP state forked
    shares = cpu_shares(workers) if workers > 1 else []
    futures: dict[str, concurrent.futures.Future] = {}
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=start_worker,
                                                initargs=(context.Value("i", 0), shares)) as pool:
        def submit(label: str) -> None:
            script, argv = runs[label]
            futures[label] = pool.submit(train, script, argv, logs / f"{label.replace(' ', '_')}.log")

        first, second, *distilled = runs
        print(f"Training the {first.lower()} and the {second.lower()} ({workers} worker(s), logs in {logs}) ...",
              flush=True)
        submit(first)
        submit(second)
        results = {first: wait_for(first, futures, logs)}
        for label in distilled:
            submit(label)
        results.update((label, wait_for(label, futures, logs)) for label in runs if label != first)
        return {label: results[label] for label in runs}


def wait_for(label: str, futures: dict[str, concurrent.futures.Future], logs: Path) -> tuple[float, float]:
    """The result of one run, printed once; a failed run shows its log's end and stops the demo."""
    try:
        accuracy, seconds = futures[label].result()
    except BaseException:
        log = logs / f"{label.replace(' ', '_')}.log"
        print(f"{label} failed; the end of {log}:\n" + "".join(log.read_text().splitlines(True)[-20:]), flush=True)
        raise
    print(f"done {label}: best top-1 {accuracy:.2f} in {seconds:.0f}s", flush=True)
    return accuracy, seconds


def last_accuracy(checkpoint: Path) -> float:
    """The test accuracy stored in ``checkpoint`` (the epoch it was written at)."""
    import torch

    return float(torch.load(checkpoint, map_location="cpu", weights_only=True)["accuracy"])


if __name__ == "__main__":
    main()
