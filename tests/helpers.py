"""Test utilities shared by the end-to-end tests (not fixtures: plain functions)."""
from __future__ import annotations

import contextlib
import csv
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, *args: str, cwd: Path, timeout: float = 300,
               check: bool = True) -> subprocess.CompletedProcess:
    """Run an entry script as a subprocess, exactly as a user would from the shell."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    result = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, timeout=timeout,
                            capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed ({result.returncode}):\nSTDOUT:\n{result.stdout}\n"
                             f"STDERR:\n{result.stderr}")
    return result


def write_published_teacher(save_folder: Path, arch: str = "resnet8", num_classes: int = 100,
                            seed: int = 0) -> Path:
    """A teacher checkpoint in the published RepDistiller format (no 'arch' key) at
    <save_folder>/models/<arch>_vanilla/ckpt_epoch_240.pth."""
    from models import model_dict

    torch.manual_seed(seed)
    model = model_dict[arch](num_classes=num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    path = save_folder / "models" / f"{arch}_vanilla" / "ckpt_epoch_240.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 240, "model": model.state_dict(), "accuracy": 70.0,
                "optimizer": optimizer.state_dict()}, path)
    return path


def numeric_gradient(function, x: np.ndarray, step: float = 1e-6) -> np.ndarray:
    """Central finite-difference gradient of a scalar NumPy function (independent of autograd)."""
    x = np.asarray(x, dtype=np.float64)
    gradient = np.zeros_like(x)
    for position in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[position] += step
        minus[position] -= step
        gradient[position] = (function(plus) - function(minus)) / (2 * step)
    return gradient


@contextlib.contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """Serve ``folder`` with ``python -m http.server`` on 127.0.0.1 (a free port); yields the base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port),
                                "--directory", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the test HTTP server did not start")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait()


def torch_value_and_grad(loss_fn, student: np.ndarray, *others: torch.Tensor) -> tuple[float, np.ndarray]:
    """Loss value and gradient w.r.t. ``student`` computed by the code under test, in float64."""
    student_tensor = torch.tensor(student, dtype=torch.float64, requires_grad=True)
    value = loss_fn(student_tensor, *others)
    value.backward()
    return value.item(), student_tensor.grad.numpy()


def adaptive_pool(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Adaptive average pooling of (B, C, H, W): cell i spans [floor(i*H/o), ceil((i+1)*H/o))."""
    batch, channels, height, width = x.shape
    out = np.zeros((batch, channels, out_h, out_w))
    for i in range(out_h):
        h0, h1 = (i * height) // out_h, -((-(i + 1) * height) // out_h)
        for j in range(out_w):
            w0, w1 = (j * width) // out_w, -((-(j + 1) * width) // out_w)
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return out


def run_folder(save: Path) -> Path:
    """The one run folder train_student.py wrote under ``save``."""
    (run_dir,) = (save / "student" / "student_model").iterdir()
    return run_dir


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    """The run's metrics.csv rows without the wall-clock column."""
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in csv.DictReader(handle)]


def train_straight_and_resumed(argv: Callable[..., list[str]], tmp_path: Path) -> tuple[Path, Path]:
    """train_student.main for 2 epochs, and for 1 epoch ("killed") then ``--resume auto`` to 2;
    ``argv(save, epochs, *extra)`` builds the command line. Returns both run folders."""
    from training import student as train_student

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train_student.main(argv(straight, 2))
    train_student.main(argv(resumed, 1))
    train_student.main(argv(resumed, 2, "--resume", "auto"))
    return run_folder(straight), run_folder(resumed)


def assert_same_run(a: Path, b: Path, model: str = "resnet8", atol: float = 0.0) -> None:
    """Both runs' last checkpoints hold equal weights and method state, and their metrics are equal
    (bit for bit, or within ``atol`` absolute and relative)."""
    state_a = torch.load(a / f"{model}_last.pth", weights_only=True)
    state_b = torch.load(b / f"{model}_last.pth", weights_only=True)
    pairs = [*((key, value, state_b["model"][key]) for key, value in state_a["model"].items()),
             *((key, value, state_b["task"]["method"][key]) for key, value in state_a["task"]["method"].items())]
    for key, value_a, value_b in pairs:
        if atol == 0.0 or not value_a.is_floating_point():
            assert torch.equal(value_a, value_b), key
        else:
            torch.testing.assert_close(value_a, value_b, atol=atol, rtol=atol, msg=key)
    rows_a, rows_b = metrics_rows(a), metrics_rows(b)
    if atol == 0.0:
        assert rows_a == rows_b
        return
    assert [row.keys() for row in rows_a] == [row.keys() for row in rows_b]
    for row_a, row_b in zip(rows_a, rows_b):
        for column, text in row_a.items():
            assert float(text or 0) == pytest.approx(float(row_b[column] or 0), rel=atol, abs=atol), column


def softmax(row: np.ndarray) -> np.ndarray:
    """Softmax of one float64 row."""
    exponentials = np.exp(row - row.max())
    return exponentials / exponentials.sum()


def zscore(row: np.ndarray) -> np.ndarray:
    """Logit standardization of one row: (row - mean) / (1e-7 + std), std with Bessel's correction."""
    return (row - row.mean()) / (1e-7 + row.std(ddof=1))


def kd_reference(y_s: np.ndarray, y_t: np.ndarray, temperature: float, standardize: bool = False) -> float:
    """T^2 * mean over samples of sum_c p_t log(p_t / p_s), written out sample by sample (float64);
    ``standardize`` z-scores each row of logits first."""
    total = 0.0
    for logits_s, logits_t in zip(y_s, y_t):
        if standardize:
            logits_s, logits_t = zscore(logits_s), zscore(logits_t)
        p_s, p_t = softmax(logits_s / temperature), softmax(logits_t / temperature)
        total += sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    return temperature**2 * total / len(y_s)
