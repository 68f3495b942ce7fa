"""Parallel sweeps (scripts/sweep.py): two sweeps on one save folder train each run once, a killed
run is taken over and resumed by the other sweep, and Ctrl-C stops every run with a checkpoint.
Tiny runs: resnet8 -> resnet8 on the generated 500-image CIFAR-100 fixture, 2-3 epochs."""
from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from helper.runlock import LOCK_FILE, holder
from helpers import write_published_teacher

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_published_teacher(tmp_path_factory.mktemp("teacher"), "resnet8")


def sweep_env(teacher: Path, data: Path, save: Path, methods: str, trials: int, epochs: int, batch_size: int,
              **more: str) -> dict[str, str]:
    return {**os.environ, "PYTHON": sys.executable, "METHODS": methods, "TRIALS": str(trials),
            "EPOCHS": str(epochs), "STUDENT": "resnet8", "TEACHER": str(teacher), "DATA_FOLDER": str(data),
            "SAVE_FOLDER": str(save), "EXTRA": f"--batch_size {batch_size} --no_progress --device cpu", **more}


def start_sweep(env: dict[str, str], output: Path) -> subprocess.Popen:
    """sh scripts/run_cifar_distill.sh in the background (it execs scripts/sweep.py: same pid)."""
    with open(output, "w") as handle:
        return subprocess.Popen(["sh", "scripts/run_cifar_distill.sh"], cwd=REPO, env=env, stdout=handle,
                                stderr=subprocess.STDOUT, start_new_session=True)


def finish(process: subprocess.Popen, output: Path, timeout: float = 600) -> tuple[int, str]:
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    return code, output.read_text()


def wait_for(condition: Callable[[], object], what: str, timeout: float = 300) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def epochs_logged(run_dir: Path) -> list[int]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def run_log(save: Path, run_dir: Path) -> str:
    return (save / "logs" / "student" / "student_model" / f"{run_dir.name}.log").read_text()


def test_two_sweeps_on_one_save_folder_train_each_run_once(teacher: Path, cifar_folder: Path,
                                                           tmp_path: Path) -> None:
    save = tmp_path / "save"
    env = sweep_env(teacher, cifar_folder, save, "kd dcd", trials=2, epochs=2, batch_size=128)
    first = start_sweep(env, tmp_path / "first.txt")
    second = start_sweep(env, tmp_path / "second.txt")
    (code_1, out_1), (code_2, out_2) = finish(first, tmp_path / "first.txt"), finish(second, tmp_path / "second.txt")
    assert code_1 == 0 and code_2 == 0, out_1 + out_2
    runs = sorted((save / "student" / "student_model").iterdir())
    assert len(runs) == 4
    for run_dir in runs:
        assert epochs_logged(run_dir) == [1, 2], run_dir.name  # one uninterrupted history
        assert not (run_dir / LOCK_FILE).exists()
        log = run_log(save, run_dir)
        assert log.count(" start on ") == 1 and " resume on " not in log, log
    done = [line for line in (out_1 + out_2).splitlines() if " done " in line]
    assert len(done) == 4 and len({line.split()[2] for line in done}) == 4
    assert "4 of 4 runs finished" in out_1 and "4 of 4 runs finished" in out_2


def test_a_killed_run_is_resumed_by_the_other_sweep(teacher: Path, cifar_folder: Path, tmp_path: Path) -> None:
    save = tmp_path / "save"
    env = sweep_env(teacher, cifar_folder, save, "kd", trials=1, epochs=3, batch_size=32)
    run_dir = save / "student" / "student_model" / "kd_cifar100_S_resnet8_T_resnet8_r_0.1_a_0.9_b_0_trial_1"
    first = start_sweep(env, tmp_path / "first.txt")
    wait_for(lambda: (run_dir / "resnet8_last.pth").exists(), "the end of epoch 1")
    pid = holder(run_dir)["pid"]
    os.kill(pid, signal.SIGSTOP)  # hold the run mid-way until the second sweep waits for it
    second = start_sweep(env, tmp_path / "second.txt")
    wait_for(lambda: " wait " in (tmp_path / "second.txt").read_text(), "the second sweep to wait for the run")
    os.kill(pid, signal.SIGKILL)
    code_1, out_1 = finish(first, tmp_path / "first.txt")
    code_2, out_2 = finish(second, tmp_path / "second.txt")
    assert code_1 == 1 and "killed by SIGKILL" in out_1, out_1
    assert code_2 == 0 and " resume " in out_2 and "1 of 1 runs finished" in out_2, out_2
    assert epochs_logged(run_dir) == [1, 2, 3]
    assert "Resuming at epoch 2" in run_log(save, run_dir)


def test_ctrl_c_stops_every_run_with_a_checkpoint_and_the_next_sweep_resumes(teacher: Path, cifar_folder: Path,
                                                                             tmp_path: Path) -> None:
    save = tmp_path / "save"
    env = sweep_env(teacher, cifar_folder, save, "kd dcd", trials=1, epochs=3, batch_size=32, WORKERS="2")
    runs = save / "student" / "student_model"
    sweep = start_sweep(env, tmp_path / "first.txt")
    pids = []
    for name in ("kd_cifar100_S_resnet8_T_resnet8_r_0.1_a_0.9_b_0_trial_1",
                 "dcd_cifar100_S_resnet8_T_resnet8_r_1_a_0_b_1_trial_1"):
        wait_for(lambda: (runs / name / "resnet8_last.pth").exists(), f"the end of epoch 1 of {name}")
        pids.append(holder(runs / name)["pid"])
        os.kill(pids[-1], signal.SIGSTOP)  # both mid-run at once
    for pid in pids:
        os.kill(pid, signal.SIGCONT)
    sweep.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal does
    code, out = finish(sweep, tmp_path / "first.txt")
    assert code == 130, out
    assert out.count(" stop ") == 2 and "checkpoint saved" in out, out
    for run_dir in runs.iterdir():
        assert holder(run_dir) is None and not (run_dir / LOCK_FILE).exists()
        assert epochs_logged(run_dir)[-1] < 3

    code, out = finish(start_sweep(env, tmp_path / "second.txt"), tmp_path / "second.txt")
    assert code == 0 and out.count(" resume ") == 2, out
    for run_dir in runs.iterdir():
        assert epochs_logged(run_dir) == [1, 2, 3]
