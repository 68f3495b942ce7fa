"""Small shared utilities: device choice, seeding, lr schedule, RNG state capture, atomic writes."""
from __future__ import annotations

import os
import random
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch


def plural(count: int, noun: str) -> str:
    """'1 epoch', '3 epochs' (English count + noun for console messages)."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def resolve_device(name: str = "auto") -> torch.device:
    """Return the training device for ``--device auto|cpu|cuda`` (auto picks cuda when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(
            "error: --device cuda was requested but no CUDA device is visible to PyTorch. "
            "Run with --device cpu (or --device auto), or check `nvidia-smi` and your CUDA build of torch."
        )
    return torch.device(name)


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def configure_threads(device: torch.device) -> None:
    """On CPU, use one intra-op thread per core, shared among the processes torchrun started on
    this machine (torch's default oversubscribes with workers); outside torchrun an OMP_NUM_THREADS
    the user set wins (e.g. 1 on a busy shared machine, where threads that wait on each other cost
    more than they gain)."""
    if device.type == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        requested = os.environ.get("OMP_NUM_THREADS", "")
        if "LOCAL_WORLD_SIZE" not in os.environ and requested.isdigit() and int(requested) > 0:
            torch.set_num_threads(int(requested))  # (torchrun sets OMP_NUM_THREADS=1 for its processes itself)
        else:
            torch.set_num_threads(max(1, cores // max(1, processes)))


def learning_rate_at(epoch: int, base_lr: float, decay_epochs: list[int], decay_rate: float) -> float:
    """Step schedule of RepDistiller: lr * rate^(number of decay epochs strictly below ``epoch``), epoch 1-based."""
    steps = sum(1 for milestone in decay_epochs if epoch > milestone)
    return base_lr * (decay_rate**steps)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def capture_rng_state() -> dict:
    """All global RNG states (python, numpy, torch CPU and CUDA) as weights_only-loadable objects."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
        state["cuda_current"] = torch.cuda.get_rng_state()  # this process's GPU (cuda:LOCAL_RANK under torchrun)
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["key"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
        if "cuda_current" in state:  # rank 0 saved its own GPU's stream; every rank continues from it
            torch.cuda.set_rng_state(state["cuda_current"])


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], durable: bool = False) -> None:
    """Write ``path`` atomically: ``write(handle)`` fills a temp file beside it, which then replaces
    ``path`` (a reader, or a crash at any moment, sees the old complete file or the new one). The
    file gets the mode ``open()`` would give it (0666 less the umask, e.g. 0644), so a save folder
    shared with others stays readable. ``durable``: fsync the file and the rename too."""
    path = Path(path)
    while True:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if temporary.exists():
            temporary.unlink()
        raise
    if durable:
        try:
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except OSError:  # some file systems refuse fsync on folders
            pass


def clock(seconds: float, hours: bool = False) -> str:
    """'1:02:03' / '2:03' ('0:02:03' with ``hours``) for a duration in seconds."""
    minutes, secs = divmod(int(seconds), 60)
    whole_hours, minutes = divmod(minutes, 60)
    return f"{whole_hours}:{minutes:02d}:{secs:02d}" if whole_hours or hours else f"{minutes}:{secs:02d}"


def log_tail(path: Path, lines: int = 3) -> str:
    """The last non-empty lines of a log (its error message), joined with ' | '."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 8192))
            text = handle.read().decode(errors="replace").replace("\r", "\n")
    except OSError:
        return ""
    kept = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("[sweep]")]
    return " | ".join(kept[-lines:])
