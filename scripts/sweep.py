"""Run the training runs of a sweep on one or more workers, each run exactly once.

The sweep scripts (scripts/run_cifar_*.sh, run_transfer.sh) build their runs in shell loops and
hand them here, one per line on stdin: the entry script and its arguments, separated by tabs.

    python scripts/sweep.py --methods        # the sweeps' method names and their -r/-a/-b (registry)
    python scripts/sweep.py [--workers N | --gpus 0,1,2,3 [--runs_per_gpu 2]] [--dry_run] < runs.tsv
    python scripts/sweep.py --launcher slurm [--dry_run] < runs.tsv   # one SLURM job array (scripts/slurm_launch.py)

For each run the entry script itself says where its run folder is and when it is finished (the
code behind its --print_run_dir, with the run's exact arguments). Each free worker then takes the
next run, claims its folder with an OS lock (helper/runlock.py: no other process, of this sweep or
another one, trains it meanwhile), skips it when finished, and starts it (with --resume auto when
unfinished) with CUDA_VISIBLE_DEVICES set to the worker's GPU. Runs held by another process are
waited for: resumed when that process dies, skipped when it finished them. Each run's output goes
to <save_folder>/logs/<run folder relative to save_folder>.log (a student's:
<save_folder>/logs/student/student_model/<run>.log), and to the terminal with one worker. A failed run
does not stop the others; Ctrl-C or SIGTERM stops every run (each saves a checkpoint; the next sweep resumes
them). Exit status: 0 when every run is finished, 1 when some failed or hold a run of other settings
(conflict: never trained into), 130/143 when stopped.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataset.teacher_bank import AUTO_BUILD_MIN_EPOCHS  # noqa: E402
from helper.errors import UserError, did_you_mean, report_user_errors  # noqa: E402
from helper.run_folder import RunPlan  # noqa: E402
from helper.util import clock, log_tail  # noqa: E402
from training import ENTRY_MODULES  # noqa: E402
from helper.runlock import INHERITED_LOCK_VARIABLE, WORKER_VARIABLE, RunLock, describe_holder, holder  # noqa: E402

if TYPE_CHECKING:
    from slurm_launch import SlurmSettings  # imported when LAUNCHER=slurm only: it is where submitit is used

ENTRY_SCRIPTS = tuple(ENTRY_MODULES)
RETRY_SECONDS = 2.0  # how often a run held by another process is checked again


def method_table() -> list[tuple[str, str]]:
    """(name, flags) of every method a sweep can run, in registry order: each key with its default
    weights, followed by KEY+kd (-a 1) for the methods marked ``sweep_with_kd``; a preset (``dot``:
    KD with --optimizer dot) with its method's weights."""
    from distiller_zoo import METHODS, table_names
    from distiller_zoo.base import resolve_method

    def flags(key: str, gamma: float, alpha: float, beta: float) -> str:
        return f"--distill {key} -r {gamma:g} -a {alpha:g} -b {beta:g}"

    rows = []
    for name in table_names():
        method = resolve_method(name)
        rows.append((name, flags(name, method.default_gamma, method.default_alpha, method.default_beta)))
        if name in METHODS and method.sweep_with_kd:
            rows.append((f"{name}+kd", flags(name, method.default_gamma, 1.0, method.default_beta)))
    return rows


@dataclass
class Run:
    """One run of the sweep: its command and what its entry script says about its folder."""

    script: str
    args: list[str]
    plan: RunPlan
    bank_job: tuple[Any, ...] | None = None  # the teacher bank it reads (entry script's teacher_bank_job)
    next_try: float = 0.0
    waiting_noted: bool = False

    @property
    def label(self) -> str:
        return self.plan.run_dir.name

    @property
    def log_path(self) -> Path:
        try:
            relative = self.plan.run_dir.resolve().relative_to(self.plan.save_folder.resolve())
        except ValueError:
            relative = Path(self.label)
        return self.plan.save_folder / "logs" / f"{relative}.log"


def ask_entry_script(script: str, args: list[str]) -> tuple[RunPlan, tuple[Any, ...] | None]:
    """The run plan of ``script args`` as ``script args --print_run_dir`` computes it (in this
    process: the modules are imported once for the whole sweep), and the teacher bank the run
    would read (None: none). Raises UserError."""
    if script not in ENTRY_SCRIPTS:
        raise UserError(f"'{script}' is not an entry script of this repository ({', '.join(ENTRY_SCRIPTS)}).")
    module = importlib.import_module(ENTRY_MODULES[script])
    captured, program = io.StringIO(), sys.argv[0]
    sys.argv[0] = script
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(captured):
            opt = module.parse_args([*args, "--print_run_dir"])
    except SystemExit:  # argparse: unknown flag or bad value
        message = captured.getvalue().strip().splitlines()
        raise UserError(message[-1] if message else "invalid arguments") from None
    finally:
        sys.argv[0] = program
    return module.run_plan(opt), module.teacher_bank_job(opt)


def plan_runs(lines: list[str]) -> tuple[list[Run], list[str]]:
    """Runs from the tab-separated command lines (duplicates of one run folder dropped), and the
    errors of those whose flags are invalid."""
    runs: list[Run] = []
    errors: list[str] = []
    seen: set[Path] = set()
    for line in lines:
        if not line.strip():
            continue
        script, *args = line.split("\t")
        try:
            plan, bank_job = ask_entry_script(script, args)
        except UserError as error:
            errors.append(f"{script} {' '.join(args)}: {error}")
            continue
        if plan.run_dir.resolve() not in seen:
            seen.add(plan.run_dir.resolve())
            runs.append(Run(script, args, plan, bank_job))
    return runs, errors


@dataclass
class Worker:
    """Where one run at a time goes: a GPU (CUDA_VISIBLE_DEVICES) or a share of the CPU cores."""

    name: str
    env: dict[str, str]
    cpus: set[int] | None = None  # CPU affinity of its runs (CPU workers only, when several share the cores)


def make_workers(gpus: str, runs_per_gpu: int | None, workers: int | None) -> list[Worker]:
    """GPUS x RUNS_PER_GPU workers, or WORKERS CPU workers (default one, today's behaviour)."""
    if gpus and workers:
        raise UserError(f"Set either GPUS ({gpus}) or WORKERS ({workers}), not both: with GPUS the number of "
                        "workers is GPUS x RUNS_PER_GPU.")
    if runs_per_gpu is not None and (not gpus or runs_per_gpu < 1):
        raise UserError(f"RUNS_PER_GPU={runs_per_gpu} needs GPUS (e.g. GPUS=0,1,2,3 RUNS_PER_GPU=2) and must be "
                        ">= 1; on the CPU set WORKERS=N instead.")
    if gpus:
        if gpus == "all":
            ids = _visible_gpus()
        else:
            ids = [gpu.strip() for gpu in gpus.split(",") if gpu.strip()]
        if not ids:
            raise UserError(f"GPUS='{gpus}' names no GPU; use GPUS=0,1,2,3 (ids as in nvidia-smi) or GPUS=all.")
        per_gpu = runs_per_gpu or 1
        return [Worker(f"GPU {gpu}" + (f" #{slot + 1}" if per_gpu > 1 else ""), {"CUDA_VISIBLE_DEVICES": gpu})
                for slot in range(per_gpu) for gpu in ids]
    count = workers or 1
    if count < 1:
        raise UserError(f"WORKERS must be a positive count, got {count}.")
    if count == 1:
        return [Worker("worker 1", {})]
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []

    def share(index: int) -> set[int] | None:  # every count-th core; one core shared when they run out
        return (set(cores[index::count]) or {cores[index % len(cores)]}) if cores else None

    return [Worker(f"cpu worker {index + 1}", {}, share(index)) for index in range(count)]


def _visible_gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [gpu.strip() for gpu in visible.split(",") if gpu.strip()]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


@dataclass
class Active:
    """A run in progress on a worker."""

    run: Run
    worker: Worker
    lock: RunLock
    process: subprocess.Popen
    log: BinaryIO
    pump: threading.Thread
    started: float = field(default_factory=time.monotonic)


def _pump(source: BinaryIO, log: BinaryIO, echo: bool) -> None:
    """Copy a run's output to its log (and to the terminal when ``echo``) as it comes; keeps
    draining when a sink fails (a full disk, a closed terminal), so the run never blocks."""
    sinks = [log, sys.stdout.buffer] if echo else [log]
    while chunk := source.read1(65536):
        for sink in sinks:
            try:
                sink.write(chunk)
                sink.flush()
            except (OSError, ValueError):
                pass


def best_accuracy(run: Run) -> str:
    try:
        from helper.checkpoint import load_checkpoint

        return f"best acc {load_checkpoint(run.plan.last_path, mmap=True).get('best_acc', 0):.2f}"
    except (UserError, TypeError, ValueError):
        return "best acc ?"


class StopRequest:
    """SIGINT/SIGTERM to the sweep: start nothing more and pass the signal to the running runs."""

    def __init__(self) -> None:
        self.signals: list[int] = []

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: self.signals.append(signum))

    @property
    def requested(self) -> bool:
        return bool(self.signals)

    @property
    def exit_status(self) -> int:
        return 143 if self.signals and self.signals[0] == signal.SIGTERM else 130


@dataclass
class Tally:
    trained: list[str] = field(default_factory=list)    # finished by this sweep
    skipped: list[str] = field(default_factory=list)    # already finished when the sweep reached them
    elsewhere: list[str] = field(default_factory=list)  # finished by another process while this sweep waited
    failed: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)    # stopped by Ctrl-C/SIGTERM with a checkpoint
    conflict: list[str] = field(default_factory=list)   # the folder holds a run with other settings: untouched

    @property
    def finished(self) -> int:
        return len(self.trained) + len(self.skipped) + len(self.elsewhere)


class Sweep:
    """Keeps every worker busy with the next run nobody holds until all runs are finished."""

    def __init__(self, runs: list[Run], workers: list[Worker], name: str) -> None:
        self.queue, self.total, self.workers, self.name = list(runs), len(runs), workers, name
        self.active: dict[str, Active] = {}
        self.tally = Tally()
        self.stop = StopRequest()
        self.echo = len(workers) == 1  # one run at a time: its output on the terminal, as before
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        print(f"{self.name}: {text}", flush=True)

    def event(self, verb: str, text: str) -> None:
        print(f"[{clock(time.monotonic() - self.started, hours=True)}] {verb:<6} {text}", flush=True)

    def run(self) -> int:
        """Schedule until every run is finished, failed, or (after a stop request) left for later."""
        self.stop.install()
        forwarded = 0
        while (self.queue and not self.stop.requested) or self.active:
            while forwarded < len(self.stop.signals):
                self.forward(self.stop.signals[forwarded])
                forwarded += 1
            if not self.stop.requested:
                for worker in self.workers:
                    if worker.name not in self.active and not self.start_next(worker):
                        break
            self.reap()
            time.sleep(0.2)
        return self.finish()

    def start_next(self, worker: Worker) -> bool:
        """Claim and start the first run in the queue that nobody holds; False when there is none."""
        now = time.monotonic()
        for run in list(self.queue):
            if run.next_try > now:
                continue
            if run.plan.checkpoint_status() in ("finished", "conflict"):
                self.queue.remove(run)
                self.skip(run)
                continue
            try:
                lock = RunLock.try_acquire(run.plan.run_dir)
            except OSError as error:
                self.queue.remove(run)
                self.tally.failed.append(run.label)
                self.event("failed", f"{run.label}: cannot create or lock its run folder ({error})")
                continue
            if lock is None:
                self.note_waiting(run)
                run.next_try = now + RETRY_SECONDS
                continue
            self.queue.remove(run)
            status = run.plan.checkpoint_status()  # again, now that nobody else can change it
            if status in ("finished", "conflict"):
                lock.release()
                self.skip(run)
                continue
            self.launch(run, worker, lock, resume=status == "unfinished")
            return True
        return False

    def skip(self, run: Run) -> None:
        differences = run.plan.differences()
        if differences:
            self.tally.conflict.append(run.label)
            listed = "; ".join(f"{name}: {old} -> {new}" for name, old, new in differences)
            self.event("conflict", f"{run.label}: its folder holds a run trained with other settings ({listed}); not "
                                   "trained into. Use another TRIALS/--trial or SAVE_FOLDER, or delete the folder.")
            return
        by_other = run.waiting_noted
        (self.tally.elsewhere if by_other else self.tally.skipped).append(run.label)
        self.event("skip", f"{run.label}: finished{' by another process' if by_other else ''} "
                           f"({run.plan.epochs} epochs)")

    def note_waiting(self, run: Run) -> None:
        if not run.waiting_noted:
            run.waiting_noted = True
            info = holder(run.plan.run_dir) or {}
            self.event("wait", f"{run.label}: held by {describe_holder(info)}; this sweep takes it over if that "
                               "process stops before finishing it")

    def launch(self, run: Run, worker: Worker, lock: RunLock, resume: bool) -> None:
        """Start ``run`` on ``worker``, handing it the claimed lock; output to the run's log."""
        command = [sys.executable, str(ROOT / run.script), *run.args, *(["--resume", "auto"] if resume else [])]
        env = {**os.environ, **worker.env, "PYTHONUNBUFFERED": "1", INHERITED_LOCK_VARIABLE: str(lock.fd),
               WORKER_VARIABLE: worker.name}
        run.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(run.log_path, "ab")
        log.write(f"[sweep] {time.strftime('%Y-%m-%d %H:%M:%S')} {'resume' if resume else 'start'} on "
                  f"{worker.name}: {' '.join(command)}\n".encode())
        log.flush()
        self.event("resume" if resume else "start", f"{run.label} on {worker.name}"
                   + (" (unfinished: --resume auto)" if resume else ""))
        if self.echo:
            print(f"+ {' '.join(command[1:])}", flush=True)
        try:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, env=env, pass_fds=(lock.fd,), start_new_session=True)
        except OSError as error:
            log.close()
            lock.release()
            self.tally.failed.append(run.label)
            self.event("failed", f"{run.label}: could not start {command[0]} ({error})")
            return
        if worker.cpus:
            try:
                os.sched_setaffinity(process.pid, worker.cpus)
            except OSError:
                pass
        pump = threading.Thread(target=_pump, args=(process.stdout, log, self.echo), daemon=True)
        pump.start()
        self.active[worker.name] = Active(run, worker, lock, process, log, pump)

    def reap(self) -> None:
        """Collect the runs that ended: log footer, release the folder, report."""
        for name, active in list(self.active.items()):
            code = active.process.poll()
            if code is None:
                continue
            del self.active[name]
            active.pump.join(timeout=10)
            elapsed = time.monotonic() - active.started
            active.log.write(f"[sweep] {time.strftime('%Y-%m-%d %H:%M:%S')} exit status {code} after "
                             f"{clock(elapsed)}\n".encode())
            active.log.close()
            active.lock.release()
            self.report(active.run, active.worker, code, elapsed)

    def report(self, run: Run, worker: Worker, code: int, elapsed: float) -> None:
        where = f"{run.label} on {worker.name}"
        if code == 0 and run.plan.checkpoint_status() == "finished":
            self.tally.trained.append(run.label)
            self.event("done", f"{where} in {clock(elapsed)}, {best_accuracy(run)}")
        elif self.stop.requested and code in (130, 143, -signal.SIGINT, -signal.SIGTERM):
            self.tally.stopped.append(run.label)
            saved = run.plan.last_path.is_file()
            self.event("stop", f"{where} after {clock(elapsed)}: " + ("checkpoint saved, the next sweep resumes it"
                               if saved else "stopped before its first checkpoint, the next sweep starts it again"))
        else:
            reason = (f"killed by {signal.Signals(-code).name}" if code < 0 else
                      "exited without finishing its epochs" if code == 0 else f"exit status {code}")
            self.tally.failed.append(run.label)
            self.event("failed", f"{where} after {clock(elapsed)}, {reason}: {log_tail(run.log_path)} "
                                 f"(log: {run.log_path})")

    def forward(self, signum: int) -> None:
        """Pass a stop signal on to every running run (a second one makes them abort at once)."""
        name = signal.Signals(signum).name
        self.say(f"{name}: starting no more runs; stopping the {len(self.active)} running one(s), each saves a "
                 "checkpoint (again to abort them at once)")
        for active in self.active.values():
            try:
                os.killpg(active.process.pid, signum)
            except OSError:
                pass

    def finish(self) -> int:
        """Print the tally; the exit status says whether every run is finished."""
        tally = self.tally
        self.say(f"{tally.finished} of {self.total} runs finished in {clock(time.monotonic() - self.started)} "
                 f"({len(tally.trained)} trained now, {len(tally.skipped)} already finished, {len(tally.elsewhere)} "
                 f"by another process); failed: {' '.join(tally.failed) or 'none'}"
                 + (f"; conflict (other settings, not trained): {' '.join(tally.conflict)}" if tally.conflict else ""))
        if self.stop.requested:
            self.say(f"stopped: {len(tally.stopped)} run(s) saved a checkpoint, {len(self.queue)} not started; run "
                     "the same command again to continue.")
            return self.stop.exit_status
        return 1 if tally.failed or tally.conflict else 0


def write_plan(runs: list[Run], name: str) -> None:
    """<save_folder>/sweeps/<name>-<hash>.json: the sweep's runs, for scripts/run_status.py."""
    by_folder: dict[Path, list[Run]] = {}
    for run in runs:
        by_folder.setdefault(run.plan.save_folder, []).append(run)
    for save_folder, group in by_folder.items():
        entries = [{"run_dir": str(run.plan.run_dir.resolve()), "model_name": run.plan.model_name,
                    "epochs": run.plan.epochs, "log": str(run.log_path.resolve()),
                    "command": [run.script, *run.args], "identity": run.plan.identity} for run in group]
        digest = hashlib.sha1(json.dumps([e["run_dir"] for e in entries]).encode()).hexdigest()[:8]
        path = save_folder / "sweeps" / f"{name}-{digest}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"sweep": name, "started": time.time(), "runs": entries}, indent=1))
        os.replace(tmp, path)


def print_overview(runs: list[Run], where: str, name: str, dry_run: bool) -> None:
    """One line with the counts per status (and, for a dry run, every run and its command)."""
    statuses = [run.plan.status() for run in runs]
    counts = {status: statuses.count(status) for status in ("finished", "running", "unfinished", "missing", "conflict")}
    logs = sorted({str(run.plan.save_folder / "logs") for run in runs})
    print(f"{name}: {len(runs)} runs: {counts['finished']} finished, {counts['running']} running elsewhere, "
          f"{counts['unfinished']} unfinished, {counts['missing']} not started, {counts['conflict']} conflict (other "
          f"settings in the folder); {where}; run logs in {', '.join(logs) or '-'}", flush=True)
    if dry_run:
        for run, status in zip(runs, statuses):
            print(f"{status:<10} {run.plan.run_dir}\n           {run.script} {' '.join(run.args)}")


def parse_cli(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", action="store_true", help="print 'NAME FLAGS' for every sweep method and exit")
    parser.add_argument("--name", default="sweep", help="name in the progress lines and the plan file")
    parser.add_argument("--workers", default="", help="runs at once on the CPU (default 1)")
    parser.add_argument("--gpus", default="", help="GPU ids for CUDA_VISIBLE_DEVICES, e.g. 0,1,2,3, or 'all'")
    parser.add_argument("--runs_per_gpu", default="", help="runs each GPU holds at once (default 1)")
    parser.add_argument("--dry_run", action="store_true", help="list the runs and their status; train nothing")
    parser.add_argument("--launcher", default="local", help="local (workers on this machine, the default) or slurm "
                        "(one SLURM job array through submitit, settings from SLURM_SWEEP_*)")
    return parser.parse_args(argv)


LAUNCHERS = ("local", "slurm")


def slurm_settings(args: argparse.Namespace) -> SlurmSettings | None:
    """The SLURM_SWEEP_* settings for --launcher slurm (None for local); refuses an unknown launcher
    and the local workers' variables, before any run is planned."""
    launcher = args.launcher.strip() or "local"
    if launcher not in LAUNCHERS:
        raise UserError(f"Unknown LAUNCHER '{launcher}'.{did_you_mean(launcher, LAUNCHERS)} Use LAUNCHER=local (the "
                        "default: workers on this machine, see GPUS and WORKERS) or LAUNCHER=slurm (one SLURM job "
                        "array, see the SLURM_SWEEP_* variables in the README's 'On a SLURM cluster').")
    if launcher == "local":
        return None
    local_only = [f"{name}={value}" for name, value in (("GPUS", args.gpus), ("RUNS_PER_GPU", args.runs_per_gpu),
                                                        ("WORKERS", args.workers)) if value.strip()]
    if local_only:
        raise UserError(f"{', '.join(local_only)} apply to LAUNCHER=local; with LAUNCHER=slurm every run is one task "
                        "of the job array with SLURM_SWEEP_GPUS GPUs (SLURM_SWEEP_PARALLELISM tasks at once). Unset "
                        "them.")
    if str(Path(__file__).resolve().parent) not in sys.path:  # imported as a module (tests)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
    from slurm_launch import SlurmSettings, check_commands

    settings = SlurmSettings.from_env(os.environ)
    if not args.dry_run:
        check_commands(settings)
    return settings


def count_or_none(text: str, variable: str) -> int | None:
    if not text.strip():
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise UserError(f"{variable} must be a positive count, got '{text}'.")
    return int(text)


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_cli(argv)
    if args.methods:
        print("\n".join(f"{name} {flags}" for name, flags in method_table()))
        return 0
    slurm = slurm_settings(args)
    workers = [] if slurm else make_workers(args.gpus.strip(), count_or_none(args.runs_per_gpu, "RUNS_PER_GPU"),
                                            count_or_none(args.workers, "WORKERS"))
    try:
        runs, errors = plan_runs(sys.stdin.read().splitlines())
    except KeyboardInterrupt:
        print(f"{args.name}: interrupted before any run started.", file=sys.stderr)
        return 130
    if errors:
        for error in errors:
            print(f"{args.name}: error: {error}", file=sys.stderr)
        raise UserError(f"{len(errors)} run(s) have invalid flags (above); nothing was started. Fix the "
                        "variables (STUDENT, TEACHER, EXTRA, ...) and run the sweep again.")
    where = ("LAUNCHER=slurm: one job array task per run" if slurm else
             f"{len(workers)} worker(s): {', '.join(worker.name for worker in workers)}")
    print_overview(runs, where, args.name, args.dry_run)
    if slurm:
        from slurm_launch import launch

        return launch(runs, slurm, args.name, args.dry_run, record=lambda: write_plan(runs, args.name))
    if args.dry_run or not runs:
        return 0
    write_plan(runs, args.name)
    try:
        build_teacher_banks(runs, workers[0], args.name)
    except KeyboardInterrupt:
        print(f"{args.name}: interrupted while building a teacher bank (the next sweep continues it).",
              file=sys.stderr)
        return 130
    return Sweep(runs, workers, args.name).run()


def build_teacher_banks(runs: list[Run], worker: Worker, name: str) -> None:
    """Build each teacher bank once, before the runs that read it: its logits when the runs that read
    the bank together train for at least AUTO_BUILD_MIN_EPOCHS epochs, its embedding when those that
    read the embedding do (then --teacher_bank auto finds it and uses it). A failed build is reported;
    its runs then train as --teacher_bank auto decides alone."""
    groups: dict[tuple[Any, ...], list[Run]] = {}
    for run in runs:
        if run.bank_job is not None and run.plan.checkpoint_status() in ("missing", "unfinished"):
            groups.setdefault(run.bank_job[0], []).append(run)
    for group in groups.values():
        builder, epochs = bank_builder(group)
        if builder is None:
            continue
        log = builder.plan.save_folder / "logs" / "teacher_banks" / f"{builder.label}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"{name}: building the teacher bank that {len(group)} run(s) read ({epochs} epochs in all); log: {log}",
              flush=True)
        command = [sys.executable, str(ROOT / builder.script), *builder.args, "--build_teacher_bank"]
        with open(log, "ab") as handle:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       env={**os.environ, **worker.env, "PYTHONUNBUFFERED": "1"})
            _pump(process.stdout, handle, echo=True)
            code = process.wait()
        if code in (130, 143, -2, -15):
            raise KeyboardInterrupt  # the build was stopped with the sweep: its finished chunks are kept
        if code != 0:
            print(f"{name}: the teacher bank build exited with status {code} (log: {log}); its runs decide alone.",
                  file=sys.stderr, flush=True)


def bank_builder(group: list[Run]) -> tuple[Run | None, int]:
    """The run of ``group`` (runs that read one bank) whose --build_teacher_bank builds what the group
    repays: one that reads the embedding (both outputs, one pass) when the embedding readers train
    for AUTO_BUILD_MIN_EPOCHS epochs together, else one that reads only the logits when all do; None
    when neither. Also the epochs the runs it serves train."""
    embedding_runs = [run for run in group if "embedding" in run.bank_job[1]]
    if sum(run.plan.epochs for run in embedding_runs) >= AUTO_BUILD_MIN_EPOCHS:
        return embedding_runs[0], sum(run.plan.epochs for run in group)
    logits_runs = [run for run in group if "embedding" not in run.bank_job[1]]
    epochs = sum(run.plan.epochs for run in group)
    return (logits_runs[0] if logits_runs and epochs >= AUTO_BUILD_MIN_EPOCHS else None), epochs

if __name__ == "__main__":
    sys.exit(main())
