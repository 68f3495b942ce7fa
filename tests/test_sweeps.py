"""The sweep scripts (scripts/run_cifar_*.sh): weights, skip/resume logic, and a 1-epoch smoke sweep."""
from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import write_published_teacher

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"

pytestmark = pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")
_spec = importlib.util.spec_from_file_location("run_status", SCRIPTS / "run_status.py")
run_status = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_status)


def _sh(command: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHON": sys.executable, **env}
    return subprocess.run(["sh", "-c", command], cwd=REPO, env=environment, capture_output=True, text=True,
                          timeout=300)


def test_method_weights_match_the_paper_tables() -> None:
    names = ("kd hint attention similarity correlation vid crd rkd pkt abound factor fsp nst rrd dcd "
             "kdsvd reviewkd simkd catkd crd+kd rrd+kd dcd+kd")
    script = (f'SCRIPT_DIR={SCRIPTS}; ROOT={REPO}; . "$SCRIPT_DIR/common.sh"; '
              f'for m in {names}; do method_weights "$m"; '
              'echo "$m $METHOD_KEY -r $(fmt_g $METHOD_R) -a $(fmt_g $METHOD_A) -b $(fmt_g $METHOD_B)"; done')
    result = _sh(script)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines["kd"] == "kd -r 0.1 -a 0.9 -b 0"
    assert lines["pkt"] == "pkt -r 1 -a 0 -b 30000"
    assert lines["correlation"] == "correlation -r 1 -a 0 -b 0.02"
    assert lines["crd"] == "crd -r 1 -a 0 -b 0.8"
    assert lines["crd+kd"] == "crd -r 1 -a 1 -b 0.8"
    assert lines["dcd+kd"] == "dcd -r 1 -a 1 -b 1"
    assert lines["rrd+kd"] == "rrd -r 1 -a 1 -b 1"
    assert lines["simkd"] == "simkd -r 0 -a 0 -b 1"
    assert lines["catkd"] == "catkd -r 1 -a 0 -b 15"
    from distiller_zoo import METHODS  # every key's -b is its registered default

    for key, method in METHODS.items():
        assert lines[key].endswith(f" -b {method.default_beta:g}"), (key, lines[key])


def test_bad_variables_fail_early(tmp_path: Path) -> None:
    result = _sh("sh scripts/run_cifar_distill.sh", METHODS="kd nope", TEACHER=str(tmp_path / "t.pth"))
    assert result.returncode == 2 and "unknown method 'nope'" in result.stderr
    result = _sh("sh scripts/run_cifar_distill.sh", TEACHER=str(tmp_path / "t.pth"))
    assert result.returncode == 2 and "fetch_pretrained_teachers.sh" in result.stderr
    result = _sh("sh scripts/run_cifar_vanilla.sh", TRIALS="1 2")
    assert result.returncode == 2 and "TRIALS must be a positive count" in result.stderr
    result = _sh("sh scripts/run_cifar_pairs.sh", PAIRS="resnet56:resnet20", TEACHER_DIR=str(tmp_path))
    assert result.returncode == 2 and "missing teacher checkpoints" in result.stderr


def test_run_status(tmp_path: Path) -> None:
    assert run_status.status_of(tmp_path / "resnet8_last.pth", 2) == "missing"
    state = {"model": {}, "epoch": 2, "stage": "main", "partial": None, "opt": {"dataset": "stl10", "trial": "1"}}
    (tmp_path / "run").mkdir()
    torch.save(state, tmp_path / "run" / "resnet8_last.pth")
    assert run_status.status_of(tmp_path / "run" / "resnet8_last.pth", 2) == "finished"
    assert run_status.status_of(tmp_path / "run" / "resnet8_last.pth", 3) == "unfinished"
    assert run_status.find_status(tmp_path, "resnet8", 2, ["dataset=stl10", "trial=1"]) == "finished"
    assert run_status.find_status(tmp_path, "resnet8", 2, ["dataset=stl10", "trial=2"]) == "missing"
    torch.save({**state, "partial": {"epoch": 3, "step": 1}}, tmp_path / "run" / "resnet8_last.pth")
    assert run_status.status_of(tmp_path / "run" / "resnet8_last.pth", 2) == "unfinished"
    (tmp_path / "run" / "resnet8_last.pth").write_bytes(b"corrupt")
    assert run_status.status_of(tmp_path / "run" / "resnet8_last.pth", 2) == "unfinished"


@pytest.mark.slow
def test_distill_sweep_smoke_skip_and_summary(cifar_folder: Path, tmp_path: Path) -> None:
    teacher = write_published_teacher(tmp_path / "teachers", "resnet8")
    save = tmp_path / "save"
    env = {"EPOCHS": "1", "TRIALS": "1", "METHODS": "kd dcd", "STUDENT": "resnet8", "TEACHER": str(teacher),
           "DATA_FOLDER": str(cifar_folder), "SAVE_FOLDER": str(save),
           "EXTRA": "--batch_size 64 --no_progress --device cpu"}
    first = _sh("sh scripts/run_cifar_distill.sh", **env)
    assert first.returncode == 0, first.stdout + first.stderr
    runs = save / "student" / "student_model"
    names = ["kd_cifar100_S_resnet8_T_resnet8_r_0.1_a_0.9_b_0_trial_1",
             "dcd_cifar100_S_resnet8_T_resnet8_r_1_a_0_b_1_trial_1"]
    assert sorted(p.name for p in runs.iterdir()) == sorted(names)
    for name in names:
        assert (runs / name / "resnet8_last.pth").is_file() and (runs / name / "metrics.csv").is_file()
        assert f"run {name}" in first.stdout

    again = _sh("sh scripts/run_cifar_distill.sh", **env)
    assert again.returncode == 0, again.stdout + again.stderr
    skips = [line for line in again.stdout.splitlines() if ": skip " in line]
    assert len(skips) == 2 and all(any(name in line for line in skips) for name in names), again.stdout
    assert "+ " not in again.stdout  # nothing was started

    summary = subprocess.run([sys.executable, "-m", "reporting.summary", str(save)], cwd=REPO, capture_output=True,
                             text=True, timeout=120)
    assert summary.returncode == 0, summary.stderr
    with open(save / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["method"] for row in rows) == ["DCD", "KD"]
    assert all(row["epochs_done"] == "1" and row["unfinished"] == "0" for row in rows)
    assert "| resnet8 -> resnet8 |" in summary.stdout and (save / "summary.md").is_file()


@pytest.mark.slow
def test_transfer_sweep_finds_its_runs(stl10_folder: Path, tmp_path: Path) -> None:
    from models import model_dict

    source = tmp_path / "students" / "dcd_cifar100_S_resnet8_T_resnet20_r_1_a_1_b_1_trial_1" / "resnet8_best.pth"
    source.parent.mkdir(parents=True)
    torch.save({"model": model_dict["resnet8"](num_classes=100).state_dict(), "epoch": 240, "accuracy": 70.0,
                "arch": "resnet8"}, source)
    save = tmp_path / "save"
    env = {"EPOCHS": "1", "TRIALS": "1", "DATASETS": "stl10", "STUDENT": "resnet8", "STUDENT_CKPT": str(source),
           "DATA_FOLDER": str(stl10_folder), "SAVE_FOLDER": str(save),
           "EXTRA": "--batch_size 50 --no_progress --device cpu"}
    first = _sh("sh scripts/run_transfer.sh", **env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "run transfer resnet8 stl10 trial 1" in first.stdout
    again = _sh("sh scripts/run_transfer.sh", **env)
    assert again.returncode == 0 and "skip transfer resnet8 stl10 trial 1: finished" in again.stdout, again.stdout

    from reporting.summary import summarize

    summarize(save, formats="csv")
    with open(save / "summary.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert (row["kind"], row["dataset"], row["teacher"], row["student"], row["method"]) == \
        ("transfer", "stl10", "resnet20", "resnet8", "DCD+KD")
