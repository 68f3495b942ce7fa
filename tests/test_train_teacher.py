"""End-to-end: train_teacher.py as a subprocess on the generated CIFAR-100 fixture."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from helpers import run_script

pytestmark = pytest.mark.slow


def test_train_teacher_end_to_end(cifar_folder: Path, tmp_path: Path) -> None:
    result = run_script("train_teacher.py", "--model", "resnet8", "--epochs", "2", "--data_folder",
                        str(cifar_folder), "--save_freq", "1", "--batch_size", "32", "--learning_rate", "0.05",
                        "--no_progress", cwd=tmp_path)
    run_dir = tmp_path / "save" / "models" / "resnet8_vanilla"
    for name in ("ckpt_epoch_1.pth", "ckpt_epoch_2.pth", "resnet8_best.pth", "resnet8_last.pth", "metrics.csv"):
        assert (run_dir / name).is_file(), result.stdout
    assert list((tmp_path / "save" / "teacher_tensorboards" / "resnet8_vanilla").glob("events.out.tfevents*"))
    with open(run_dir / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    best = max(float(r["test_acc1"]) for r in rows)
    assert best > 1.0 * 3, f"test accuracy {best}% does not beat chance (1%) clearly"
    state = torch.load(run_dir / "resnet8_last.pth", map_location="cpu", weights_only=True)
    assert state["arch"] == "resnet8" and state["epoch"] == 2 and isinstance(state["opt"], dict)
    assert {"model", "epoch", "accuracy", "best_acc", "optimizer"} <= set(state)
    # a second identical command refuses to overwrite the finished run
    again = run_script("train_teacher.py", "--model", "resnet8", "--epochs", "2", "--data_folder",
                       str(cifar_folder), "--batch_size", "32", cwd=tmp_path, check=False)
    assert again.returncode == 2 and "already holds a finished run" in again.stderr
    assert "Traceback" not in again.stderr
