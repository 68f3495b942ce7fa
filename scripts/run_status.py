"""Where the sweeps of a save folder stand, at a glance.

    python scripts/run_status.py [SAVE_FOLDER]            # default ./save
    python scripts/run_status.py save/ --only running failed

One line per run of every sweep started on SAVE_FOLDER (scripts/sweep.py writes the list of its
runs to <SAVE_FOLDER>/sweeps/ when it starts), in the sweeps' order, then the counts:
  finished     the last checkpoint has all epochs
  running      a live process holds the run folder's lock: its worker (GPU), pid and time so far
  failed       not running, and the last attempt ended with an error (see its log)
  partial      not running, with a checkpoint: the next sweep resumes it (--resume auto)
  not started  no checkpoint yet
  conflict     the folder holds a run trained with other settings or another teacher than the
               sweep asks for (its run.json): the sweep leaves it alone
Runs submitted with LAUNCHER=slurm (their job array's manifest is in SAVE_FOLDER/slurm/) show their
SLURM job and task in the worker column, and two more statuses:
  pending      its task waits in the queue (squeue says so, or the task has not started the run)
  requeued     its task was stopped at its time limit or preempted, saved a checkpoint and waits to
               continue it
squeue/sacct are asked (10 s at most) when they are on PATH; otherwise the logs and submitit's files
say. With --cancel, the sweeps' job arrays that still have runs to do are cancelled (scancel): each
running run saves a checkpoint first, and the next sweep resumes it.
Then a line per teacher bank output being built (with the pid holding it, whether a sweep or a
plain training run builds it) or left half-built under SAVE_FOLDER/teacher_banks/; those lines
alone when no sweep was started there.
Reads only (except --cancel): no lock is taken and nothing is written.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from helper.runlock import describe_holder, holder  # noqa: E402

STATUSES = ("finished", "running", "failed", "partial", "not started", "conflict", "pending", "requeued")
SHOWN_WHEN_PRESENT = ("conflict", "pending", "requeued")  # in the counts line only when some run has it
EXIT_LINE = re.compile(rb"^\[sweep\] .* exit status (-?\d+) after", re.MULTILINE)
STOPPED = {130, 143, -2, -15}  # Ctrl-C / SIGTERM: the run saved a checkpoint
QUEUE_STATUS = {"PENDING": "pending", "REQUEUED": "requeued", "REQUEUE_HOLD": "requeued", "REQUEUE_FED": "requeued",
                "RUNNING": "running", "CONFIGURING": "running", "COMPLETING": "running", "SUSPENDED": "running",
                "RESIZING": "running"}
ENDED_BADLY = ("FAILED", "OUT_OF_MEMORY", "TIMEOUT", "NODE_FAIL", "CANCELLED", "PREEMPTED", "BOOT_FAIL", "DEADLINE")
QUERY_SECONDS = 10


@dataclass
class Row:
    status: str
    progress: str   # epochs done / planned
    worker: str
    pid: str
    elapsed: str
    name: str


def read_json_files(folder: Path, pattern: str, what: str, order: str) -> list[dict[str, Any]]:
    """The JSON files ``folder/pattern``, oldest first by their ``order`` entry; a file that cannot be
    read is skipped with one warning naming it as ``what``."""
    found = []
    for path in sorted(folder.glob(pattern)):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            print(f"run_status: warning: cannot read the {what} '{path}'; skipping it.", file=sys.stderr)
    return sorted(found, key=lambda entry: entry.get(order, 0))


def read_plans(save_folder: Path) -> list[dict[str, Any]]:
    """Every run of every plan file, oldest sweep first, each run folder once (latest plan wins)."""
    runs: dict[str, dict[str, Any]] = {}
    for plan in read_json_files(save_folder / "sweeps", "*.json", "sweep plan", "started"):
        for run in plan.get("runs", []):
            runs.pop(run["run_dir"], None)
            runs[run["run_dir"]] = run
    return list(runs.values())


def last_exit_status(log: Path) -> int | None:
    """Exit status of the run's last attempt from its log; None while an attempt has no end line."""
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, handle.seek(0, 2) - 16384))
            tail = handle.read()
    except OSError:
        return None
    lines = [line for line in tail.splitlines() if line.startswith(b"[sweep] ")]
    match = EXIT_LINE.match(lines[-1]) if lines else None
    return int(match.group(1)) if match else None


def checkpoint_epoch(run: dict[str, Any]) -> tuple[int, bool] | None:
    """(epochs done, finished) from the run's last checkpoint; None without one."""
    from helper.checkpoint import load_checkpoint
    from helper.errors import UserError
    from helper.run_folder import Stage, checkpoint_stage, is_finished, last_checkpoint

    path = last_checkpoint(Path(run["run_dir"]), run["model_name"])
    if not path.is_file():
        return None
    try:
        state = load_checkpoint(path, mmap=True)
    except UserError:
        return 0, False
    done = int(state.get("epoch", 0)) if checkpoint_stage(state) == Stage.MAIN else 0
    return done, is_finished(state, int(run["epochs"]))


def conflicts(run: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """How the run recorded in the folder differs from what the sweep asked for (its plan entry's
    'identity'); empty for a match or when either side has no record."""
    from helper.errors import UserError
    from helper.provenance import identity_differences, read_run_record

    try:
        recorded = read_run_record(Path(run["run_dir"]))
    except UserError:
        return []
    if recorded is None or not run.get("identity"):
        return []
    return identity_differences(recorded, run["identity"])


def read_slurm_tasks(save_folder: Path) -> dict[str, dict[str, Any]]:
    """run folder -> the task of the latest job array that trains it (SAVE_FOLDER/slurm/*/manifest.json),
    with its manifest's executor and submitit folder."""
    tasks: dict[str, dict[str, Any]] = {}
    for manifest in read_json_files(save_folder / "slurm", "*/manifest.json", "job array manifest", "submitted"):
        for task in manifest.get("tasks", []):
            tasks[task["run_dir"]] = {**task, "executor": manifest.get("executor", "slurm"),
                                      "submitit_folder": manifest.get("submitit_folder", ""),
                                      "array": manifest.get("job_id", "")}
    return tasks


def _ask(command: list[str]) -> str:
    """A SLURM command's output; '' when it is not on PATH, fails or takes over QUERY_SECONDS."""
    if shutil.which(command[0]) is None:
        return ""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=QUERY_SECONDS)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout if result.returncode == 0 else ""


def slurm_states(tasks: list[dict[str, Any]]) -> dict[str, str]:
    """SLURM's state of each task ('4242_3' -> 'PENDING', 'FAILED', ...): squeue for the tasks it
    still holds, sacct for the ended ones; {} where neither is on PATH."""
    arrays = sorted({str(task["array"]) for task in tasks if task.get("executor") == "slurm" and task.get("array")})
    if not arrays:
        return {}
    states: dict[str, str] = {}
    for line in _ask(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(arrays)]).splitlines():
        job, _, state = line.partition("|")
        states[job.strip()] = state.strip().split(" ")[0]
    for line in _ask(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(arrays)]).splitlines():
        job, _, state = line.partition("|")
        states[job.strip()] = state.strip()
    return states


def slurm_row(run: dict[str, Any], task: dict[str, Any], states: dict[str, str], progress: str) -> Row | None:
    """The line of an unfinished run that a job array's task trains: pending, running (the task has
    started, the run not yet), requeued or failed; None when the usual rules say it better."""
    job, name, log = str(task["job_id"]), Path(run["run_dir"]).name, Path(run["log"])
    worker = f"slurm {job}"
    state, text = states.get(job, ""), _log_text(log)
    started = f"on slurm {job} " in text  # the task has run before
    if state in QUEUE_STATUS:
        status = QUEUE_STATUS[state]
        return Row("requeued" if status == "pending" and started else status, progress, worker, "", "", name)
    last = [line for line in text.splitlines() if line.startswith("[sweep] ")][-1:]
    if last and "requeued after" in last[0] and not state:
        return Row("requeued", progress, worker, "", "", name)
    code = last_exit_status(log)
    if code in STOPPED:  # stopped with a checkpoint (scancel, preemption): partial, the next sweep resumes it
        return None
    if code is not None and code != 0:
        return Row("failed", progress, worker, "", "", f"{name}  (exit status {code}: {log_tail(text)}; log: {log})")
    error = _task_error(task)
    if error or state.startswith(ENDED_BADLY):
        why = f"SLURM state {state}" if state else "its task failed"
        return Row("failed", progress, worker, "", "", f"{name}  ({why}: {error or log_tail(text)}; log: {log})")
    if not started and not state:
        return Row("pending", progress, worker, "", "", name)
    return None


def _task_error(task: dict[str, Any]) -> str:
    """The error a task ended with (the last line of its traceback in submitit's job log), or ''."""
    folder = Path(task.get("submitit_folder", ""))
    text = _log_text(folder / f"{task['job_id']}_0_log.out")
    if "Submitted job triggered an exception" not in text:
        return ""
    kept = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("submitit ")]
    return kept[-1] if kept else ""


def _log_text(log: Path) -> str:
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, handle.seek(0, 2) - 65536))
            return handle.read().decode(errors="replace").replace("\r", "\n")
    except OSError:
        return ""


def log_tail(text: str, lines: int = 3) -> str:
    """The last non-empty lines of a log that are not the sweep's own, joined with ' | '."""
    kept = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("[sweep]")]
    return " | ".join(kept[-lines:])


def status_row(run: dict[str, Any], now: float, task: dict[str, Any] | None = None,
               states: dict[str, str] | None = None) -> Row:
    """The status line of one planned run (``task``: the job array task that trains it, if any)."""
    name, epochs = Path(run["run_dir"]).name, int(run["epochs"])
    saved = checkpoint_epoch(run)
    progress = f"{saved[0] if saved else 0}/{epochs}"
    info = holder(Path(run["run_dir"]))
    if info is not None:
        started = info.get("started")
        return Row("running", progress, str(info.get("worker") or "-"), str(info.get("pid", "?")),
                   _duration(now - started) if isinstance(started, (int, float)) else "-", name)
    differences = conflicts(run) if saved is not None else []
    if differences:
        listed = "; ".join(f"{setting}: {old} -> {new}" for setting, old, new in differences)
        return Row("conflict", progress, "", "", "", f"{name}  (recorded -> asked: {listed})")
    if saved is not None and saved[1]:
        return Row("finished", progress, "", "", "", name)
    row = slurm_row(run, task, states or {}, progress) if task else None
    if row is not None:
        return row
    code = last_exit_status(Path(run["log"]))
    if code is not None and code != 0 and code not in STOPPED:
        tail = log_tail(_log_text(Path(run["log"])))
        return Row("failed", progress, "", "", "", f"{name}  (exit status {code}: {tail}; log: {run['log']})")
    return Row("partial" if saved is not None else "not started", progress, "", "", "", name)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(max(seconds, 0)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def print_table(rows: list[Row]) -> None:
    header = Row("status", "epochs", "worker", "pid", "running", "run")
    table = [header, *rows]
    widths = [max(len(getattr(row, column)) for row in table) for column in ("status", "progress", "worker", "pid",
                                                                               "elapsed")]
    for row in table:
        cells = (row.status, row.progress, row.worker, row.pid, row.elapsed)
        print("  ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + "  " + row.name)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("save_folder", nargs="?", default="save", type=Path, help="the sweeps' SAVE_FOLDER")
    parser.add_argument("--only", nargs="+", choices=[status.split()[0] for status in STATUSES], metavar="STATUS",
                        help=f"list only these statuses ({', '.join(s.split()[0] for s in STATUSES)})")
    parser.add_argument("--cancel", action="store_true", help="cancel (scancel) the sweeps' SLURM job arrays that "
                        "still have runs to do; each running run saves a checkpoint first")
    args = parser.parse_args(argv)
    runs = read_plans(args.save_folder)
    banks = bank_lines(args.save_folder)  # also those a plain training run builds, outside any sweep
    if not runs and banks:
        print("\n".join(banks))
        return 0
    if not runs:
        print(f"run_status: no sweep has been started on '{args.save_folder}' (no plans in "
              f"{args.save_folder / 'sweeps'}/) and no teacher bank is being built there. Pass the sweeps' "
              "SAVE_FOLDER.", file=sys.stderr)
        return 2
    now = time.time()
    tasks = read_slurm_tasks(args.save_folder)
    states = slurm_states(list(tasks.values()))
    rows = [status_row(run, now, tasks.get(run["run_dir"]), states) for run in runs]
    if args.cancel:
        return cancel(runs, rows, tasks)
    shown = [row for row in rows if not args.only or row.status.split()[0] in args.only]
    if shown:
        print_table(shown)
    counts = ", ".join(f"{sum(row.status == status for row in rows)} {status}" for status in STATUSES
                       if status not in SHOWN_WHEN_PRESENT or any(row.status == status for row in rows))
    print(f"{len(rows)} runs: {counts}")
    for line in banks:
        print(line)
    return 0


def cancel(runs: list[dict[str, Any]], rows: list[Row], tasks: dict[str, dict[str, Any]]) -> int:
    """scancel the job arrays that train a run not finished yet (SLURM sends the running tasks
    SIGTERM: each run saves a checkpoint and exits)."""
    open_tasks = [tasks[run["run_dir"]] for run, row in zip(runs, rows)
                  if run["run_dir"] in tasks and row.status != "finished"]
    arrays = sorted({str(task["array"]) for task in open_tasks if task.get("executor") == "slurm"})
    local = sorted({str(task["array"]) for task in open_tasks if task.get("executor") != "slurm"})
    if local:
        print(f"run_status: tasks of submitit's local executor are processes of the machine that started them; "
              f"stop them there with kill -TERM (controller pids: {' '.join(local)}).", file=sys.stderr)
    if not arrays:
        print("run_status: no SLURM job array of these sweeps has runs left to do; nothing to cancel.")
        return 0
    if shutil.which("scancel") is None:
        print(f"run_status: scancel is not on PATH; on a login node of the cluster run: scancel {' '.join(arrays)}",
              file=sys.stderr)
        return 2
    result = subprocess.run(["scancel", *arrays], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        print(f"run_status: scancel {' '.join(arrays)} failed: {result.stderr.strip()}", file=sys.stderr)
        return 1
    print(f"run_status: cancelled job array(s) {' '.join(arrays)} (scancel); each running run saves a checkpoint, "
          "and the same sweep command started again resumes them.")
    return 0


def bank_lines(save_folder: Path) -> list[str]:
    """One line per output of a teacher bank under SAVE_FOLDER/teacher_banks that is not complete:
    being built (by the live process holding its lock: pid, host, since when; a plain training run
    or a sweep) or interrupted (the next run that reads it continues it); and one per folder of the
    earlier bank layout (a single manifest.json), which no run reads."""
    lines = []
    root = save_folder / "teacher_banks"
    for folder in sorted(path for path in root.glob("*") if path.is_dir()) if root.is_dir() else []:
        if (folder / "manifest.json").is_file():
            lines.append(f"teacher bank {folder.name}: earlier layout, read by no run (delete the folder)")
            continue
        outputs = {path.stem for path in (*folder.glob("*.json"), *folder.glob("*.lock"))}
        for output in sorted(outputs, key=lambda name: (name != "logits", name)):
            line = bank_output_line(folder, output)
            if line is not None:
                lines.append(line)
    return lines


def bank_output_line(folder: Path, output: str) -> str | None:
    """The status of one output of a bank folder, or None when it is complete (or nothing holds it)."""
    name = f"teacher bank {folder.name}/{output}"
    info = holder(folder, f"{output}.lock")
    try:
        manifest = json.loads((folder / f"{output}.json").read_text())
    except FileNotFoundError:
        manifest = None
    except (OSError, ValueError):
        return f"{name}: unreadable manifest (delete the folder)"
    if (manifest is None and info is None) or (isinstance(manifest, dict) and manifest.get("complete")):
        return None
    progress = "starting"
    if isinstance(manifest, dict):
        chunk = max(int(manifest.get("chunk_images", 1)), 1)
        done = len(manifest.get("checksums", []))
        total = -(-int(manifest.get("spec", {}).get("train_size", 0)) // chunk)
        progress = f"chunk {done} of {total} ({100 * done / max(total, 1):.0f}%)"
    state = (f"building ({describe_holder(info)})" if info is not None
             else "interrupted (continued by the next run that reads it)")
    return f"{name}: {state}, {progress}"

if __name__ == "__main__":
    sys.exit(main())
