"""A sweep's runs as one SLURM job array, through submitit (LAUNCHER=slurm in scripts/common.sh).

scripts/sweep.py hands over the runs still to do (the list DRY_RUN=1 prints, without the finished
ones); each becomes one task of a job array, at most SLURM_SWEEP_PARALLELISM at once. A task claims
its run folder (helper/runlock.py), trains the run with its entry script (``--resume auto`` when
unfinished) and writes the same log as a local sweep. At the time limit SLURM sends the task
submitit's signal (USR2, SLURM_SWEEP_SIGNAL_SECONDS before the end): the run saves a checkpoint
and exits, and submitit requeues the task, which continues the run with ``--resume auto``. On
preemption SLURM sends SIGTERM: the run saves a checkpoint, and SLURM requeues the task
(``--requeue``) where the cluster's PreemptMode is REQUEUE.

Everything lives under <save_folder>/slurm/<sweep>-<date>/: manifest.json (job ids, which task
trains which run folder) and submitit/ (sbatch script, job logs). scripts/run_status.py reads them.
submitit is imported only here, and only when LAUNCHER=slurm.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from helper.errors import UserError  # noqa: E402
from helper.run_folder import last_checkpoint  # noqa: E402
from helper.util import clock, log_tail  # noqa: E402
from helper.runlock import INHERITED_LOCK_VARIABLE, WORKER_VARIABLE, RunLock, describe_holder, holder  # noqa: E402

# (variable, default, meaning): the settings of LAUNCHER=slurm. Named SLURM_SWEEP_* because SLURM
# itself sets SLURM_CPUS_PER_TASK, SLURM_MEM_PER_NODE, ... inside jobs, and srun/sbatch read
# SLURM_*/SBATCH_* input variables: a user's SLURM_PARTITION would change every srun in the job.
VARIABLES = (
    ("SLURM_SWEEP_PARTITION", "", "partition (--partition); empty: the cluster's default"),
    ("SLURM_SWEEP_ACCOUNT", "", "account to charge (--account); empty: your default"),
    ("SLURM_SWEEP_GPUS", "1", "GPUs per task, on each node (--gpus-per-node); more than 1: torchrun in the task"),
    ("SLURM_SWEEP_NODES", "1", "nodes per task (--nodes); more than 1: one torchrun per node"),
    ("SLURM_SWEEP_CPUS", "8", "CPU cores per task (--cpus-per-task)"),
    ("SLURM_SWEEP_MEM", "", "memory per node (--mem, e.g. 32G); empty: the partition's default"),
    ("SLURM_SWEEP_TIME", "24:00:00", "time limit per task ([D-]HH:MM:SS or minutes); a task at its limit is requeued"),
    ("SLURM_SWEEP_PARALLELISM", "32", "tasks of the array running at once (--array=0-N%P)"),
    ("SLURM_SWEEP_SIGNAL_SECONDS", "180", "USR2 this many seconds before the time limit: checkpoint, then requeue"),
    ("SLURM_SWEEP_MAX_TIMEOUTS", "20", "times a task is requeued after reaching its time limit"),
    ("SLURM_SWEEP_EXTRA", "", "more sbatch options, e.g. \"--qos=high --constraint=a100\""),
    ("SLURM_SWEEP_SETUP", "", "shell lines run in the job first, ';'-separated, e.g. \"module load cuda\""),
    ("SLURM_SWEEP_WAIT", "0", "1: wait until every task has ended, then print the tally"),
    ("SLURM_SWEEP_EXECUTOR", "slurm", "local: run the tasks with submitit's local executor on this machine"),
)
DEFAULTS = {name: default for name, default, _ in VARIABLES}
LOCAL_ONLY_FILESYSTEMS = {"tmpfs", "ramfs", "devtmpfs", "overlay", "ext2", "ext3", "ext4", "xfs", "btrfs", "zfs",
                          "f2fs", "vfat"}
POLL_SECONDS = 0.5
STALE_LOCK_SECONDS = 300  # how long a requeued task waits for the lock its dead earlier attempt held


@dataclass
class SlurmSettings:
    """What every task of the array asks SLURM for, read from the SLURM_SWEEP_* variables."""

    partition: str = ""
    account: str = ""
    gpus: int = 1
    nodes: int = 1
    cpus: int = 8
    mem: str = ""
    minutes: int = 24 * 60
    parallelism: int = 32
    signal_seconds: int = 180
    max_timeouts: int = 20
    extra: dict[str, Any] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)
    wait: bool = False
    executor: str = "slurm"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SlurmSettings:
        """Read and check the variables (UserError naming the variable for a bad value)."""
        value = {name: env.get(name, "").strip() or default for name, default, _ in VARIABLES}
        executor = value["SLURM_SWEEP_EXECUTOR"]
        if executor not in ("slurm", "local"):
            raise UserError(f"SLURM_SWEEP_EXECUTOR must be 'slurm' (sbatch, the default) or 'local' (the tasks as "
                            f"processes on this machine, through submitit's local executor), got '{executor}'.")
        settings = cls(
            partition=value["SLURM_SWEEP_PARTITION"], account=value["SLURM_SWEEP_ACCOUNT"],
            gpus=_count(value, "SLURM_SWEEP_GPUS", minimum=0), nodes=_count(value, "SLURM_SWEEP_NODES"),
            cpus=_count(value, "SLURM_SWEEP_CPUS"), mem=value["SLURM_SWEEP_MEM"],
            minutes=parse_time(value["SLURM_SWEEP_TIME"]), parallelism=_count(value, "SLURM_SWEEP_PARALLELISM"),
            signal_seconds=_count(value, "SLURM_SWEEP_SIGNAL_SECONDS"),
            max_timeouts=_count(value, "SLURM_SWEEP_MAX_TIMEOUTS", minimum=0),
            extra=parse_extra(value["SLURM_SWEEP_EXTRA"]),
            setup=[line.strip() for line in value["SLURM_SWEEP_SETUP"].split(";") if line.strip()],
            wait=value["SLURM_SWEEP_WAIT"] not in ("", "0"), executor=executor)
        if settings.signal_seconds >= settings.minutes * 60:
            raise UserError(f"SLURM_SWEEP_SIGNAL_SECONDS={settings.signal_seconds} is not shorter than the time limit "
                            f"SLURM_SWEEP_TIME={value['SLURM_SWEEP_TIME']}: the checkpoint signal would come at once.")
        if settings.mem and not re.fullmatch(r"\d+[KMGT]?B?", settings.mem, flags=re.I):
            raise UserError(f"SLURM_SWEEP_MEM must be sbatch's --mem value, e.g. 32G or 64000M, got '{settings.mem}'.")
        return settings

    @property
    def distributed(self) -> bool:
        """Whether a task trains its run with torchrun (several GPUs or nodes)."""
        return self.gpus > 1 or self.nodes > 1


def _count(value: dict[str, str], name: str, minimum: int = 1) -> int:
    text = value[name]
    if not text.isdigit() or int(text) < minimum:
        raise UserError(f"{name} must be a whole number >= {minimum}, got '{text}' (default {DEFAULTS[name]}).")
    return int(text)


def parse_time(text: str) -> int:
    """SLURM time ('90', '12:00:00', '2-00:00:00', '1-12') -> whole minutes (at least 1)."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise UserError(f"SLURM_SWEEP_TIME must be minutes or [D-]HH:MM:SS as sbatch --time takes it, got '{text}'.")
    days, first, second, third = (int(part) if part else None for part in match.groups())
    if days is None and second is None:
        return max(first, 1)  # plain minutes
    if days is not None and second is None:
        hours, minutes, seconds = first, 0, 0  # D-HH
    elif third is None:
        hours, minutes, seconds = (first, second, 0) if days is not None else (0, first, second)  # D-HH:MM / MM:SS
    else:
        hours, minutes, seconds = first, second, third
    return max(((days or 0) * 24 + hours) * 60 + minutes + (1 if seconds else 0), 1)


def parse_extra(text: str) -> dict[str, Any]:
    """'--qos=high --constraint a100 --exclusive' -> {'qos': 'high', 'constraint': 'a100', 'exclusive': True}."""
    options: dict[str, Any] = {}
    words = shlex.split(text)
    index = 0
    while index < len(words):
        word = words[index]
        if not word.startswith("--") or len(word) < 3:
            raise UserError(f"SLURM_SWEEP_EXTRA takes long sbatch options (--name=value or --flag), got '{word}' in "
                            f"'{text}'.")
        name, equals, argument = word[2:].partition("=")
        if not equals and index + 1 < len(words) and not words[index + 1].startswith("--"):
            argument, index = words[index + 1], index + 1
        options[name.replace("_", "-")] = argument if (equals or argument) else True
        index += 1
    return options


# ---------------------------------------------------------------------------------------------
# Checks before anything is submitted


def check_commands(settings: SlurmSettings) -> None:
    """sbatch and srun must be on PATH (on a login node of the cluster)."""
    if settings.executor == "local":
        return
    missing = [command for command in ("sbatch", "srun") if shutil.which(command) is None]
    if missing:
        raise UserError(f"LAUNCHER=slurm needs SLURM's {' and '.join(missing)} on PATH, and found none: run the sweep "
                        "on a login node of the cluster (or load its slurm module first). Nothing was submitted. "
                        "Without a cluster, leave LAUNCHER unset (LAUNCHER=local: workers on this machine).")


def mount_of(path: Path) -> tuple[str, str, set[str]]:
    """(mount point, file system type, mount options) of the mount holding ``path``, from
    /proc/mounts; ('', '', set()) where that file does not exist."""
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "", "", set()
    resolved, best = str(path.resolve()), ("", "", set())
    for line in lines:
        parts = line.split()
        if len(parts) < 4:
            continue
        point = parts[1].replace("\\040", " ")
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]):
            best = (point, parts[2], set(parts[3].split(",")))
    return best


def looks_local(path: Path) -> str:
    """Where ``path`` is, when that looks local to this machine ('on a tmpfs file system ...'), else ''."""
    point, fstype, _ = mount_of(path)
    if fstype in LOCAL_ONLY_FILESYSTEMS:
        return f"on a {fstype} file system (mounted at '{point}')"
    if str(path.resolve()).startswith(("/tmp/", "/var/tmp/", "/dev/shm/")):
        return "under a temporary folder"
    return ""


def check_save_folder(save_folder: Path, settings: SlurmSettings) -> list[str]:
    """Refuse a save folder without flock; return warnings for one that looks local to this machine
    (tasks on other nodes would write elsewhere) or whose locks are local to each node."""
    import fcntl

    save_folder.mkdir(parents=True, exist_ok=True)
    probe = save_folder / f".flock-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
            probe.unlink()
    except OSError as error:
        raise UserError(f"The save folder '{save_folder}' has no working file locks (flock: {error.strerror}). The "
                        "tasks claim each run folder with flock so that no run is trained twice; put SAVE_FOLDER on a "
                        "shared file system with locks (NFSv4, NFSv3 with lockd, Lustre mounted with -o flock, "
                        "CephFS). Nothing was submitted.") from None
    if settings.executor == "local":
        return []
    warnings = []
    local = looks_local(save_folder)
    if local:
        warnings.append(f"the save folder '{save_folder}' is {local}, which looks local to this machine: tasks on "
                        "other nodes would write their runs to their own disk, where run_status.py and the next sweep "
                        "cannot see them. Use a folder every node shares (your home or project file system).")
    local = looks_local(ROOT)
    if local:
        warnings.append(f"the repository '{ROOT}' is {local}, which looks local to this machine: the tasks run its "
                        "code from there. Clone it on a file system every node shares.")
    point, fstype, options = mount_of(save_folder)
    if (fstype == "lustre" and "localflock" in options) or (fstype.startswith("nfs") and (
            "local_lock=flock" in options or "local_lock=all" in options)):
        warnings.append(f"'{point}' ({fstype}) keeps flock locks local to each node ({', '.join(sorted(options))}), so "
                        "two nodes could train one run at once; ask for -o flock (Lustre) or no local_lock (NFS).")
    return warnings


# ---------------------------------------------------------------------------------------------
# One task of the array: runs inside the job (python -m submitit.core._submit)


@dataclass
class TrainTask:
    """Train one run in a task of the array; ``checkpoint`` makes submitit requeue it (it is called
    from submitit's handler of the requeue signal, after the run has saved its checkpoint). Holds
    the run's plan as plain values: a task that finds no checkpoint starts without importing torch."""

    script: str
    args: list[str]
    plan_fields: dict[str, Any]  # helper.run_folder.RunPlan's fields
    log_path: Path
    gpus: int = 1
    nodes: int = 1

    @classmethod
    def of(cls, run: Any, settings: SlurmSettings) -> TrainTask:
        """The task of one of scripts/sweep.py's runs (script, args, plan, log_path)."""
        plan = run.plan
        fields = {"run_dir": plan.run_dir, "model_name": plan.model_name, "epochs": plan.epochs,
                  "save_folder": plan.save_folder, "identity": plan.identity}
        return cls(run.script, list(run.args), fields, run.log_path, settings.gpus, settings.nodes)

    @property
    def run_dir(self) -> Path:
        return Path(self.plan_fields["run_dir"])

    @property
    def label(self) -> str:
        return self.run_dir.name

    def status(self) -> str:
        """RunPlan.checkpoint_status(): 'missing', 'unfinished', 'finished' or 'conflict'."""
        if not last_checkpoint(self.run_dir, self.plan_fields["model_name"]).is_file():
            return "missing"
        from helper.run_folder import RunPlan

        return RunPlan(**self.plan_fields).checkpoint_status()

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self)  # the requeued task runs this again: --resume auto

    def __call__(self) -> str:
        import submitit

        environment = submitit.JobEnvironment()
        job_id, rank = environment.job_id, environment.global_rank
        requeue_signal = signal.Signals["SIG" + submitit.JobEnvironment.USR_SIG]
        status = self.status()
        if status == "finished":
            return self.note(f"{self.label}: finished (nothing to do)")
        if status == "conflict":
            raise RuntimeError(f"{self.label}: its folder holds a run trained with other settings; not trained into "
                               "(python scripts/run_status.py <save_folder> lists what differs).")
        lock = None
        if rank == 0:
            lock = RunLock.try_acquire(self.run_dir)
            if lock is None and (holder(self.run_dir) or {}).get("worker") == f"slurm {job_id}":
                # this task's own earlier attempt, on a node that died: the file server frees its lock when the
                # node's lease expires (NFSv4: about 90 s)
                lock = RunLock.try_acquire(self.run_dir, wait_seconds=STALE_LOCK_SECONDS)
            if lock is None:
                return self.note(f"{self.label}: held by {describe_holder(holder(self.run_dir) or {})}; "
                                 "left to that process")
            status = self.status()  # again, now that nobody else can change it
            if status == "finished":
                lock.release()
                return self.note(f"{self.label}: finished by another process")
            if self.torchrun:  # the training's rank 0 takes the lock itself: torchrun does not pass fds on
                lock.release()
                lock = None
        resume = status == "unfinished"
        try:
            code, received, elapsed = self.train(self.command(resume, environment), resume, job_id, rank, lock,
                                                 requeue_signal)
        finally:
            if lock is not None:
                lock.release()
        return self.outcome(code, received, elapsed, rank, requeue_signal)

    @property
    def torchrun(self) -> bool:
        return self.gpus > 1 or self.nodes > 1

    def command(self, resume: bool, environment: Any) -> list[str]:
        """The entry script's command: alone, or under torchrun (one per node, rendezvous on the
        job's first node) when the task has several GPUs or nodes."""
        tail = [str(ROOT / self.script), *self.args, *(["--resume", "auto"] if resume else [])]
        if not self.torchrun:
            return [sys.executable, *tail]
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(max(self.gpus, 1))]
        if self.nodes == 1:
            return [*launcher, "--standalone", *tail]
        port = 20000 + int(os.environ.get("SLURM_JOB_ID", "0") or 0) % 20000
        return [*launcher, "--nnodes", str(self.nodes), "--node_rank", str(environment.node), "--rdzv_backend",
                "c10d", "--rdzv_endpoint", f"{environment.hostnames[0]}:{port}", "--rdzv_id",
                str(environment.job_id), *tail]

    def train(self, command: list[str], resume: bool, job_id: str, rank: int, lock: RunLock | None,
              requeue_signal: signal.Signals) -> tuple[int, list[int], float]:
        """Run ``command``, its output appended to the run's log (other nodes than the first: to their
        task's log); the requeue signal and SIGTERM/SIGINT become a SIGTERM to the run (it saves a
        checkpoint and exits 143). Returns (exit status, signals received, seconds)."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", WORKER_VARIABLE: f"slurm {job_id}"}
        if lock is not None:
            env[INHERITED_LOCK_VARIABLE] = str(lock.fd)
        received: list[int] = []
        process: subprocess.Popen | None = None

        def forward(signum: int, frame: Any) -> None:
            received.append(signum)
            if process is not None:
                with contextlib.suppress(OSError):
                    process.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

        watched = (requeue_signal, signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.getsignal(sig) for sig in watched}
        log = self.open_log() if rank == 0 else None
        # SLURM signals every process of the task: the run must not die of the requeue signal (its default
        # action), so it inherits it blocked; this process turns it into the SIGTERM the run handles.
        signal.pthread_sigmask(signal.SIG_BLOCK, {requeue_signal})
        started = time.monotonic()
        try:
            write(log, f"{'resume' if resume else 'start'} on slurm {job_id} (host {os.uname().nodename}): "
                       f"{' '.join(command)}")
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, env=env,
                                       stderr=subprocess.STDOUT if log else None,
                                       pass_fds=(lock.fd,) if lock is not None else ())
            for sig in watched:
                signal.signal(sig, forward)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {requeue_signal})
            while process.poll() is None:
                time.sleep(POLL_SECONDS)
            elapsed = time.monotonic() - started
            write(log, f"exit status {process.returncode} after {clock(elapsed)}")
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {requeue_signal})
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if log is not None:
                log.close()
        return process.returncode, received, elapsed

    def open_log(self) -> BinaryIO:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        return open(self.log_path, "ab")

    def outcome(self, code: int, received: list[int], elapsed: float, rank: int,
                requeue_signal: signal.Signals) -> str:
        """The task's result: a line for a finished run; a requeue (through submitit's handler) after
        the requeue signal; an error (the task fails, its last log lines in the message) otherwise."""
        if code == 0 and self.status() == "finished":
            return self.note(f"{self.label}: done in {clock(elapsed)}")
        if requeue_signal in received and rank == 0:
            with self.open_log() as log:
                write(log, f"requeued after {requeue_signal.name} (time limit or preemption): the requeued task "
                           "resumes the run")
            signal.raise_signal(requeue_signal)  # submitit: checkpoint() above, requeue, exit
        if received:
            name = signal.Signals(received[0]).name
            raise RuntimeError(f"{self.label}: stopped by {name} after {clock(elapsed)} (exit status {code}); the "
                               "checkpoint is saved: a requeued task or the next sweep resumes it")
        raise RuntimeError(f"{self.label}: exit status {code} after {clock(elapsed)}: {log_tail(self.log_path)} "
                           f"(log: {self.log_path})")

    def note(self, text: str) -> str:
        print(text, flush=True)
        return text


def write(log: BinaryIO | None, text: str) -> None:
    """A '[sweep] <date> <text>' line in a run's log, as a local sweep writes them (for run_status.py)."""
    if log is not None:
        log.write(f"[sweep] {time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n".encode())
        log.flush()


# ---------------------------------------------------------------------------------------------
# Submission: in the sweep's process (scripts/sweep.py main)


def setup_lines(settings: SlurmSettings) -> list[str]:
    """Shell lines the job runs before its tasks: the repository's folder and modules, then the user's."""
    path = f"{shlex.quote(str(ROOT / 'scripts'))}:{shlex.quote(str(ROOT))}"
    return [f"cd {shlex.quote(str(ROOT))}", f"export PYTHONPATH={path}${{PYTHONPATH:+:$PYTHONPATH}}", *settings.setup]


def sbatch_parameters(settings: SlurmSettings, name: str) -> dict[str, Any]:
    """submitit's SlurmExecutor parameters for one task of the array."""
    parameters: dict[str, Any] = {
        "job_name": name, "time": settings.minutes, "nodes": settings.nodes, "ntasks_per_node": 1,
        "cpus_per_task": settings.cpus, "signal_delay_s": settings.signal_seconds,
        "array_parallelism": settings.parallelism, "setup": setup_lines(settings), "stderr_to_stdout": True,
        "wckey": None, "additional_parameters": {"requeue": True, **settings.extra}}
    for key, value in (("partition", settings.partition), ("account", settings.account), ("mem", settings.mem),
                       ("gpus_per_node", settings.gpus)):
        if value:
            parameters[key] = value
    return parameters


def make_executor(settings: SlurmSettings, folder: Path, name: str) -> Any:
    """A submitit SlurmExecutor (sbatch) or LocalExecutor (processes here) for the sweep's tasks."""
    import submitit

    if settings.executor == "local":
        executor = submitit.LocalExecutor(folder, max_num_timeout=settings.max_timeouts)
        executor.update_parameters(timeout_min=settings.minutes, signal_delay_s=settings.signal_seconds,
                                   gpus_per_node=settings.gpus, tasks_per_node=1, setup=setup_lines(settings),
                                   stderr_to_stdout=True)
        return executor
    executor = submitit.SlurmExecutor(folder, max_num_timeout=settings.max_timeouts)
    executor.update_parameters(**sbatch_parameters(settings, name))
    return executor


def sbatch_preview(settings: SlurmSettings, folder: Path, name: str, count: int) -> str:
    """The sbatch script that submitting ``count`` tasks would write (for DRY_RUN=1)."""
    from submitit.slurm.slurm import _make_sbatch_string  # what SlurmExecutor writes; needs no srun on PATH

    command = f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(str(folder))}"
    return _make_sbatch_string(command=command, folder=folder, map_count=count if count > 1 else None,
                               **sbatch_parameters(settings, name))


def partition_runs(runs: list[Any], name: str) -> list[Any]:
    """The runs to submit (not started or unfinished); says why the others are left out."""
    todo, left = [], {"finished": [], "running": [], "conflict": []}
    for run in runs:
        status = run.plan.status()
        (todo if status in ("missing", "unfinished") else left[status]).append(run)
    for status, why in (("finished", "already finished"), ("running", "being trained by another process now (the "
                        "next sweep picks them up if it stops before finishing)"), ("conflict", "hold a run of other "
                        "settings (see DRY_RUN=1); not trained into")):
        if left[status]:
            print(f"{name}: not submitted, {why}: {' '.join(run.label for run in left[status])}", flush=True)
    return todo


def launch(runs: list[Any], settings: SlurmSettings, name: str, dry_run: bool,
           record: Callable[[], None] = lambda: None) -> int:
    """Submit the runs still to do as one job array (scripts/sweep.py's runs: script, args, plan,
    log_path), then ``record`` the sweep's plan; print the job id and how to watch and stop it.
    Returns the exit status."""
    todo = partition_runs(runs, name)
    save_folder = runs[0].plan.save_folder if runs else Path("save")
    folder = save_folder / "slurm" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if dry_run:
        if todo and settings.executor == "slurm":
            print(f"{name}: the job array LAUNCHER=slurm would submit ({len(todo)} tasks):\n"
                  + sbatch_preview(settings, folder / "submitit", name, len(todo)))
        return 0
    if not todo:
        print(f"{name}: nothing to submit.", flush=True)
        return 0
    for warning in check_save_folder(save_folder, settings):
        print(f"{name}: warning: {warning}", file=sys.stderr, flush=True)
    tasks = [TrainTask.of(run, settings) for run in todo]
    jobs = submit(tasks, settings, folder, name)
    record()
    write_manifest(folder, name, settings, tasks, [job.job_id for job in jobs])
    print_submitted(folder, name, settings, tasks, jobs, save_folder)
    return wait(jobs, tasks, name) if settings.wait else 0


def submit(tasks: list[TrainTask], settings: SlurmSettings, folder: Path, name: str) -> list[Any]:
    """submitit's submit_array, sbatch's refusal (unknown partition, account, ...) as a UserError."""
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            executor = make_executor(settings, folder / "submitit", name)
            return executor.submit_array(tasks)
    except (FailedJobError, FailedSubmissionError, OSError, ValueError, RuntimeError) as error:
        shutil.rmtree(folder, ignore_errors=True)  # the pickled tasks of the refused array
        said = str(error).strip() or captured.getvalue().strip()
        raise UserError(f"sbatch refused the job array of {len(tasks)} task(s); it said: {said}. Check SLURM_SWEEP_"
                        "PARTITION, SLURM_SWEEP_ACCOUNT, SLURM_SWEEP_GPUS, SLURM_SWEEP_TIME and SLURM_SWEEP_EXTRA "
                        "against `sinfo` and your cluster's documentation. Nothing was submitted.") from None


def write_manifest(folder: Path, name: str, settings: SlurmSettings, tasks: list[TrainTask],
                   job_ids: list[str]) -> Path:
    """<folder>/manifest.json: which task (job id) trains which run folder, for run_status.py."""
    array_id = job_ids[0].split("_")[0]
    manifest = {
        "sweep": name, "submitted": time.time(), "executor": settings.executor, "job_id": array_id,
        "submitit_folder": str((folder / "submitit").resolve()),
        "cancel": ["scancel", array_id] if settings.executor == "slurm" else None,
        "tasks": [{"task": index, "job_id": job_id, "run_dir": str(task.run_dir.resolve()),
                   "log": str(task.log_path.resolve()), "label": task.label}
                  for index, (task, job_id) in enumerate(zip(tasks, job_ids))]}
    path = folder / "manifest.json"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=1))
    return path


def print_submitted(folder: Path, name: str, settings: SlurmSettings, tasks: list[TrainTask], jobs: list[Any],
                    save_folder: Path) -> None:
    array_id = jobs[0].job_id.split("_")[0]
    where = f" on partition {settings.partition}" if settings.partition else ""
    if settings.executor == "local":
        print(f"{name}: started {len(tasks)} task(s) with submitit's local executor (pids "
              f"{' '.join(job.job_id for job in jobs)}); logs in {folder / 'submitit'}\n"
              f"  watch:  python scripts/run_status.py {save_folder}", flush=True)
        return
    print(f"{name}: submitted {len(tasks)} run(s) as SLURM job {array_id}{where} (array of {len(tasks)} task(s), at "
          f"most {min(settings.parallelism, len(tasks))} at once, {settings.gpus} GPU(s) x {settings.nodes} node(s) "
          f"each); manifest {folder / 'manifest.json'}, job logs in {folder / 'submitit'}\n"
          f"  watch:  python scripts/run_status.py {save_folder}    (or: squeue -j {array_id})\n"
          f"  stop:   scancel {array_id}    (or: python scripts/run_status.py {save_folder} --cancel)", flush=True)


def wait(jobs: list[Any], tasks: list[TrainTask], name: str) -> int:
    """SLURM_SWEEP_WAIT=1: wait for every task to end; print the tally. 0 when every run finished."""
    try:
        while not all(job.done() for job in jobs):
            time.sleep(POLL_SECONDS if jobs and type(jobs[0]).__name__ == "LocalJob" else 30)
    except KeyboardInterrupt:
        print(f"{name}: stopped waiting; the tasks go on (stop them with scancel {jobs[0].job_id.split('_')[0]}).",
              file=sys.stderr)
        return 130
    failed = [task.label for task in tasks if task.status() != "finished"]
    print(f"{name}: {len(tasks) - len(failed)} of {len(tasks)} submitted runs finished; failed: "
          f"{' '.join(failed) or 'none'}", flush=True)
    for task, job in zip(tasks, jobs):
        if task.label in failed:
            print(f"  {task.label} (job {job.job_id}): {log_tail(task.log_path)} (log: {task.log_path})", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":  # python scripts/slurm_launch.py: the settings of LAUNCHER=slurm
    for variable, default, meaning in VARIABLES:
        print(f"{variable:<28} {default or '-':<10} {meaning}")
