"""--dataset cifar10: the official python layout in both pipelines, 10-class teachers and students,
run names, and the results summary grouping it as its own dataset."""
from __future__ import annotations

import csv
import pickle
import re
from pathlib import Path

import pytest
import torch
import torchvision

from training import student as train_student
from training import teacher as train_teacher
from dataset import DatasetError, load_dataset, make_loaders
from dataset import cifar10
from datagen import write_cifar10
from reporting.runs import scan


@pytest.fixture(scope="module")
def cifar10_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar10(tmp_path_factory.mktemp("cifar10_data"), n_train=200, n_test=40, seed=0)


def test_official_layout_loads(cifar10_folder: Path) -> None:
    root = cifar10_folder / "cifar-10-batches-py"
    assert sorted(path.name for path in root.iterdir()) == ["batches.meta", *(f"data_batch_{i}" for i in range(1, 6)),
                                                             "test_batch"]
    with open(root / "data_batch_2", "rb") as handle:
        raw = pickle.load(handle, encoding="bytes")
    assert {b"data", b"labels", b"batch_label", b"filenames"} <= set(raw) and raw[b"data"].shape == (40, 3072)
    data = load_dataset("cifar10", cifar10_folder, download=False)
    assert (data.name, data.num_classes, data.num_train, data.num_test) == ("cifar10", 10, 200, 40)
    assert sorted(set(data.train_labels.tolist())) == list(range(10))
    assert torch.equal(data.train_labels[40:80], torch.tensor(raw[b"labels"]))  # batches in order 1..5
    assert torch.equal(data.train_images[40, 0].flatten(), torch.from_numpy(raw[b"data"][0, :1024]))  # CHW rows
    # normalised as the DCD/RRD code's CIFAR-10 loaders do (with the CIFAR-100 statistics)
    assert data.mean == (0.5071, 0.4867, 0.4408) and data.std == (0.2675, 0.2565, 0.2761)
    assert cifar10.URL == torchvision.datasets.CIFAR10.url and cifar10.MD5 == torchvision.datasets.CIFAR10.tgz_md5


def test_both_pipelines_give_the_same_batches(cifar10_folder: Path) -> None:
    data = load_dataset("cifar10", cifar10_folder, download=False)
    fast = make_loaders(data, 16, "cpu", loader="fast", augment=False)
    classic = make_loaders(data, 16, "cpu", loader="classic", num_workers=0, augment=False)
    for fast_loader, classic_loader in zip(fast, classic):
        for (images, labels, index), (other_images, other_labels, other_index) in zip(
                fast_loader.iterate(1), classic_loader.iterate(1)):
            assert torch.equal(index, other_index) and torch.equal(labels, other_labels)
            assert torch.equal(images, other_images)


def test_missing_offline_says_where_the_files_go(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as error:
        load_dataset("cifar10", tmp_path, download=False)
    assert "cifar-10-batches-py" in str(error.value) and cifar10.URL in str(error.value)


@pytest.mark.slow
def test_teacher_student_and_summary(cifar10_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLERS_OFFLINE", "1")
    common = ["--dataset", "cifar10", "--data_folder", str(cifar10_folder), "--save_folder", str(tmp_path),
              "--epochs", "1", "--batch_size", "16", "--device", "cpu", "--no_progress"]
    train_teacher.main(["--model", "resnet8", *common])
    teacher = tmp_path / "models" / "resnet8_cifar10_vanilla" / "resnet8_last.pth"
    assert torch.load(teacher, weights_only=True)["model"]["fc.weight"].shape[0] == 10
    for method in ("kd", "crd"):
        train_student.main(["--path_t", str(teacher), "--distill", method, "--model_s", "resnet8", "--nce_k", "64",
                            *common])
    output = capsys.readouterr().out
    runs = tmp_path / "student" / "student_model"
    assert sorted(path.name for path in runs.iterdir()) == ["crd_cifar10_S_resnet8_T_resnet8_r_1_a_0_b_0.8_trial_1",
                                                            "kd_cifar10_S_resnet8_T_resnet8_r_0.1_a_0.9_b_0_trial_1"]
    with open(runs / "kd_cifar10_S_resnet8_T_resnet8_r_0.1_a_0.9_b_0_trial_1" / "metrics.csv") as handle:
        assert float(next(csv.DictReader(handle))["test_acc1"]) >= 0
    # console wording for people: no stage tags, no NaN accuracies, counts agree with their nouns
    assert not re.search(r"\[(main|init)\]", output) and "nan" not in output and "1 epochs" not in output
    assert {run.dataset for run in scan(tmp_path)} == {"cifar10"}


def test_a_cifar100_teacher_is_refused_for_cifar10(cifar10_folder: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    from helpers import write_published_teacher

    teacher = write_published_teacher(tmp_path, "resnet8", num_classes=100)
    with pytest.raises(SystemExit):
        train_student.main(["--path_t", str(teacher), "--dataset", "cifar10", "--data_folder", str(cifar10_folder),
                            "--save_folder", str(tmp_path / "save"), "--device", "cpu", "--epochs", "1"])
    assert "100 output classes" in " ".join(capsys.readouterr().err.split())
