"""One process per run folder: an OS lock (``fcntl.flock``) on ``<run folder>/run.lock``.

The lock is taken before training and held until the process ends; the OS releases it however
the process ends (SIGKILL included), so a folder is never held by a dead process and the next
sweep simply resumes the run. The file records who holds it (pid, host, device, start time) for
``scripts/run_status.py``. A sweep (scripts/sweep.py) claims the folder itself before starting the
run and passes the locked file down (``DISTILLERS_RUN_LOCK_FD``), so no other process can take
the run between the sweep's decision and the start of training. The teacher bank
(dataset/teacher_bank.py) locks each output file it builds the same way, under another lock name.

Standard library only (plus helper.errors): the sweep scheduler and the status tool use it too.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from helper.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not protected from being trained twice
    fcntl = None

LOCK_FILE = "run.lock"
INHERITED_LOCK_VARIABLE = "DISTILLERS_RUN_LOCK_FD"  # fd of a locked run.lock, set by scripts/sweep.py
WORKER_VARIABLE = "DISTILLERS_SWEEP_WORKER"         # the sweep worker's name (e.g. 'GPU 2'), shown by run_status


def _flock(fd: int, exclusive: bool = True) -> None:
    """Non-blocking flock; BlockingIOError when another open file holds a conflicting lock."""
    if fcntl is not None:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)


def _same_file(fd: int, path: Path) -> bool:
    """True when ``fd`` is the file now at ``path`` (not one a previous holder removed)."""
    try:
        opened, current = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (opened.st_dev, opened.st_ino) == (current.st_dev, current.st_ino)


class RunLock:
    """An exclusive claim on one run folder (the lock file ``name`` in it); ``release()`` removes the
    lock file (and the folder when this lock created it and nothing else was written there)."""

    def __init__(self, run_dir: Path, fd: int, created_folder: bool, name: str = LOCK_FILE) -> None:
        self.run_dir, self.fd, self.created_folder, self.name = Path(run_dir), fd, created_folder, name

    @property
    def path(self) -> Path:
        return self.run_dir / self.name

    @classmethod
    def try_acquire(cls, run_dir: Path, wait_seconds: float = 0.0, name: str = LOCK_FILE) -> RunLock | None:
        """Lock ``run_dir`` (created when missing); None when another live process holds it after
        ``wait_seconds`` (``math.inf``: wait until it is free). Raises OSError when the folder cannot
        be created or written."""
        run_dir = Path(run_dir)
        created = not run_dir.exists()
        run_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait_seconds
        while True:
            fd = os.open(run_dir / name, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                _flock(fd)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() >= deadline:
                    return None
                time.sleep(0.05)
                continue
            if _same_file(fd, run_dir / name):
                return cls(run_dir, fd, created, name)
            os.close(fd)  # the previous holder removed the file between our open and flock: retry

    @classmethod
    def adopt_inherited(cls, run_dir: Path) -> RunLock | None:
        """The lock a sweep took for this process (``DISTILLERS_RUN_LOCK_FD``), if it is this folder's."""
        value = os.environ.pop(INHERITED_LOCK_VARIABLE, None)
        if value is None or not value.isdigit() or not _same_file(int(value), Path(run_dir) / LOCK_FILE):
            return None
        try:
            _flock(int(value))  # already ours: succeeds at once
        except OSError:
            return None
        return cls(Path(run_dir), int(value), created_folder=False)

    def write_info(self, **extra: Any) -> None:
        """Record the holder (pid, host, worker/device, start time, command) in the lock file."""
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                "worker": os.environ.get(WORKER_VARIABLE) or os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                "command": " ".join(sys.argv), **extra}
        data = (json.dumps(info) + "\n").encode()
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        os.write(self.fd, data)

    def release(self) -> None:
        if self.fd < 0:
            return
        if _same_file(self.fd, self.path):
            with contextlib.suppress(OSError):
                self.path.unlink()
        os.close(self.fd)
        self.fd = -1
        if self.created_folder:
            with contextlib.suppress(OSError):  # only succeeds when nothing was written there
                self.run_dir.rmdir()


def holder(run_dir: Path, name: str = LOCK_FILE) -> dict[str, Any] | None:
    """What the lock file ``name`` says about the live process holding ``run_dir`` ({} when it wrote
    nothing yet); None when no live process holds it. Creates nothing."""
    try:
        fd = os.open(Path(run_dir) / name, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            _flock(fd, exclusive=False)  # shared: probes never block each other
        except BlockingIOError:
            try:
                return json.loads(os.read(fd, 65536) or b"{}")
            except ValueError:
                return {}
        return None
    finally:
        os.close(fd)


def describe_holder(info: dict[str, Any]) -> str:
    """'pid 1234 on host gpu-3, worker GPU 2, since 2024-05-01 12:03' (the fields it has)."""
    parts = [f"pid {info['pid']}" if "pid" in info else "a process"]
    if info.get("host"):
        parts.append(f"on host {info['host']}")
    if info.get("worker"):
        parts.append(f"worker {info['worker']}")
    if info.get("started"):
        parts.append("since " + time.strftime("%Y-%m-%d %H:%M", time.localtime(info["started"])))
    return " ".join(parts[:2]) + "".join(f", {part}" for part in parts[2:])


@contextlib.contextmanager
def claim_run_folder(run_dir: Path, main_process: bool = True) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the duration of the block (only the main process of a torchrun
    group takes it). Raises UserError when another live process trains into the folder."""
    if not main_process:
        yield
        return
    lock = RunLock.adopt_inherited(run_dir)
    if lock is None:
        try:
            lock = RunLock.try_acquire(run_dir, wait_seconds=2.0)
        except OSError as error:
            raise UserError(f"Cannot write to or lock the run folder '{run_dir}' ({error.strerror}). Pass a writable "
                            "--save_folder on a file system with file locks (flock: local disks and NFSv4 have them, "
                            "Lustre needs its flock mount option), or fix the folder's permissions.") from None
    if lock is None:
        info = holder(run_dir) or {}
        raise UserError(f"The run folder '{run_dir}' is being trained by another process ({describe_holder(info)}); "
                        "two processes training one run would overwrite each other's checkpoints. Let it finish "
                        "(a sweep started again skips it then), stop that process first (Ctrl-C or kill: it saves "
                        "a checkpoint, and --resume auto continues it), or use a new --trial. For a sweep, `python "
                        "scripts/run_status.py <save_folder>` shows which process runs what.")
    try:
        lock.write_info()
        yield
    finally:
        lock.release()
