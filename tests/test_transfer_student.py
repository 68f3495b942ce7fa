"""transfer_student.py: linear probe on generated STL-10 and TinyImageNet from a saved student."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from training import transfer as transfer_student
from datagen import write_tinyimagenet
from helpers import run_script
from models import classifier_key, get_classifier, model_dict

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def student_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A distilled-student-style checkpoint ('model', 'arch', ...) of a wrn_16_1 with trained-looking BN stats."""
    torch.manual_seed(0)
    model = model_dict["wrn_16_1"](num_classes=100)
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 3, 32, 32))  # non-trivial running statistics
    path = tmp_path_factory.mktemp("student") / "S_wrn_16_1_run" / "wrn_16_1_best.pth"
    path.parent.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "epoch": 240, "best_acc": 70.0, "arch": "wrn_16_1"}, path)
    return path


def _check_only_classifier_changed(source: Path, run_dir: Path, num_classes: int) -> None:
    before = torch.load(source, weights_only=True)["model"]
    after = torch.load(run_dir / "wrn_16_1_last.pth", weights_only=True)["model"]
    head = classifier_key("wrn_16_1")
    assert after[f"{head}.weight"].shape == (num_classes, before[f"{head}.weight"].shape[1])
    for key, value in before.items():
        if not key.startswith(head + "."):
            assert torch.equal(value, after[key]), f"{key} changed during the linear probe"
    model = model_dict["wrn_16_1"](num_classes=num_classes)
    model.load_state_dict(after, strict=True)


@pytest.mark.parametrize("dataset", ["stl10", "tinyimagenet"])
def test_transfer_two_epochs(dataset: str, student_checkpoint: Path, stl10_folder: Path, tmp_path: Path) -> None:
    if dataset == "stl10":
        data_folder, classes = stl10_folder, 10
    else:
        data_folder, classes = tmp_path / "data", 3
        write_tinyimagenet(data_folder, n_classes=classes, n_train_per_class=12, layout="sorted")
    result = run_script("transfer_student.py", "--path_s", str(student_checkpoint), "--model_s", "wrn_16_1",
                        "--dataset", dataset, "--trial", "1", "--epochs", "2", "--batch_size", "16",
                        "--data_folder", str(data_folder), "--no_progress", cwd=tmp_path)
    assert "linear-probe accuracy" in result.stdout
    (run_dir,) = (tmp_path / "save" / "transfer" / "transfer_model").iterdir()
    assert run_dir.name == f"transfer_{dataset}_S_wrn_16_1_from_S_wrn_16_1_run_trial_1"
    with open(run_dir / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and all(0 <= float(r["test_acc1"]) <= 100 for r in rows)
    _check_only_classifier_changed(student_checkpoint, run_dir, classes)


def test_linear_probe_freezes_everything_but_a_fresh_head() -> None:
    for arch in model_dict:
        model = model_dict[arch](num_classes=100)
        head = transfer_student.linear_probe(model, 10)
        assert get_classifier(model) is head and head.out_features == 10
        trainable = [name for name, p in model.named_parameters() if p.requires_grad]
        key = classifier_key(arch)
        assert trainable == [f"{key}.weight", f"{key}.bias"], arch
        assert torch.all(head.bias == 0) and 0.005 < float(head.weight.detach().std()) < 0.015


def test_wrong_arch_names_both(student_checkpoint: Path, stl10_folder: Path, tmp_path: Path) -> None:
    result = run_script("transfer_student.py", "--path_s", str(student_checkpoint), "--model_s", "resnet8",
                        "--dataset", "stl10", "--data_folder", str(stl10_folder), cwd=tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "wrn_16_1" in result.stderr and "resnet8" in result.stderr
