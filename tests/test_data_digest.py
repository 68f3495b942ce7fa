"""A run knows its data by content (dataset/digest.py): the cached digest of each split, and what
resume, --print_run_dir and the summary do with it, on generated CIFAR-100 files."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from training import teacher as train_teacher
from dataset import load_dataset
from dataset import digest as data_digest
from dataset.digest import cache_path, content_of_loaded, known_content
from dataset.imagenet import load_imagenet
from datagen import write_cifar100
from helper.provenance import read_run_record
from reporting.runs import group_runs, scan
from test_bad_input import fails

SMALL = {"n_train": 128, "n_test": 64}
COMMON = ["--model", "resnet8", "--batch_size", "64", "--device", "cpu", "--no_progress", "--compile", "off"]


def independent_digest(folder: Path, split: str) -> str:
    """sha256 of the split's images and labels as the loader returns them, written out."""
    data = load_dataset("cifar100", folder, download=False)
    images, labels = getattr(data, f"{split}_images"), getattr(data, f"{split}_labels")
    digest = hashlib.sha256(f"{tuple(images.shape)}|torch.uint8|torch.int64|".encode())
    digest.update(images.numpy().tobytes())
    digest.update(labels.numpy().tobytes())
    return digest.hexdigest()[:16]


def test_digest_is_cached_reused_and_renewed_when_the_files_change(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_cifar100(tmp_path / "data", seed=0, **SMALL)
    assert known_content("cifar100", folder) is None  # never loaded: not known, and nothing is loaded to know it
    first = content_of_loaded(load_dataset("cifar100", folder, download=False), "cifar100", folder)
    assert first == {split: independent_digest(folder, split) for split in ("train", "test")}
    assert cache_path("cifar100", folder) == folder / "cifar-100-python.digest.json"
    assert known_content("cifar100", folder) == first

    def no_digesting(*args: object) -> None:
        raise AssertionError("the data was digested again")

    monkeypatch.setattr(data_digest, "data_content", no_digesting)
    assert content_of_loaded(load_dataset("cifar100", folder, download=False), "cifar100", folder) == first
    assert known_content("cifar100", folder) == first  # what --print_run_dir reads: nothing is loaded
    monkeypatch.undo()

    write_cifar100(folder, seed=1, **SMALL)  # other images, same count: the files' mtimes (and bytes) change
    assert known_content("cifar100", folder) is None
    second = content_of_loaded(load_dataset("cifar100", folder, download=False), "cifar100", folder)
    assert second["train"] != first["train"] and second == known_content("cifar100", folder)
    same_copy = write_cifar100(tmp_path / "copy", seed=1, **SMALL)  # the same content elsewhere digests alike
    assert content_of_loaded(load_dataset("cifar100", same_copy, download=False), "cifar100", same_copy) == second


def test_imagenet_digest_is_of_the_file_list(tmp_path: Path) -> None:
    """ImageNet's JPEGs are not decoded: paths, labels and sizes; a file added to a class folder renews it."""
    root = tmp_path / "imagenet"
    for split, names in (("train", ["a.JPEG", "b.JPEG"]), ("val", ["c.JPEG"])):
        for wnid in ("n01", "n02"):
            (root / split / wnid).mkdir(parents=True)
            for name in names:
                (root / split / wnid / name).write_bytes(b"\xff\xd8\xff" + name.encode())
    first = content_of_loaded(load_imagenet(tmp_path), "imagenet", tmp_path)
    assert known_content("imagenet", tmp_path) == first
    expected = hashlib.sha256("".join(f"train/{wnid}/{name}\t{label}\t9\n" for label, wnid in enumerate(("n01", "n02"))
                                      for name in ("a.JPEG", "b.JPEG")).encode()).hexdigest()[:16]
    assert first["train"] == expected
    (root / "train" / "n02" / "d.JPEG").write_bytes(b"\xff\xd8\xff")
    os.utime(root / "train" / "n02", ns=(1, 1))  # a folder's mtime moves with its listing (set apart from now)
    assert known_content("imagenet", tmp_path) is None
    assert content_of_loaded(load_imagenet(tmp_path), "imagenet", tmp_path)["train"] != first["train"]


def teacher_run(data: Path, save: Path, trial: str, epochs: int, *extra: str) -> list[str]:
    return [*COMMON, "--data_folder", str(data), "--save_folder", str(save), "--trial", trial, "--epochs",
            str(epochs), *extra]


def test_resume_onto_other_images_of_the_same_count_is_refused(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    data, save = write_cifar100(tmp_path / "data", seed=0, **SMALL), tmp_path / "save"
    train_teacher.main(teacher_run(data, save, "1", 1))
    run_dir = save / "models" / "resnet8_vanilla_trial_1"
    recorded = read_run_record(run_dir)["data"]
    assert recorded["train"] == SMALL["n_train"] and recorded["digest"] == known_content("cifar100", data)
    capsys.readouterr()
    write_cifar100(data, seed=1, **SMALL)  # the same number of other images
    train_teacher.main(teacher_run(data, save, "1", 2, "--print_run_dir"))  # not known without loading
    out = capsys.readouterr().out
    assert out.startswith(f"unfinished {run_dir}\n") and "not known yet" in out
    err = fails(train_teacher.main, teacher_run(data, save, "1", 2, "--resume", "auto"), capsys,
                f"Cannot resume the run in '{run_dir}'", "data content (images and labels): train "
                f"{recorded['digest']['train']}, test {recorded['digest']['test']} -> train ")
    assert "the dataset in --data_folder are not those the run was trained on" in err and "data train:" not in err
    assert known_content("cifar100", data) != recorded["digest"]  # the refused run digested (and cached) the data
    train_teacher.main(teacher_run(data, save, "1", 2, "--print_run_dir"))  # now known: a conflict, without loading
    out = capsys.readouterr().out
    assert out.startswith(f"conflict {run_dir}\n") and "data content (images and labels)" in out
    plan = train_teacher.run_plan(train_teacher.parse_args(teacher_run(data, save, "1", 2)))  # as the sweeps ask
    assert plan.checkpoint_status() == "conflict"


def test_runs_on_other_data_of_one_size_are_not_averaged(tmp_path: Path) -> None:
    save = tmp_path / "save"
    first, second = (write_cifar100(tmp_path / name, seed=seed, **SMALL) for name, seed in (("a", 0), ("b", 1)))
    for data, trial in ((first, "1"), (first, "2"), (second, "3")):
        train_teacher.main(teacher_run(data, save, trial, 1))
    groups = sorted(group_runs(scan(save)), key=lambda group: len(group.runs))
    assert [[run.trial for run in group.runs] for group in groups] == [["3"], ["1", "2"]]
    digests = [known_content("cifar100", folder) for folder in (second, first)]
    assert [group.distinct for group in groups] == [f"data={d['train'][:8]}/{d['test'][:8]}" for d in digests]


def test_old_records_without_a_digest_still_resume(tmp_path: Path) -> None:
    data, save = write_cifar100(tmp_path / "data", seed=0, **SMALL), tmp_path / "save"
    train_teacher.main(teacher_run(data, save, "1", 1))
    run_dir = save / "models" / "resnet8_vanilla_trial_1"
    record = read_run_record(run_dir)
    del record["data"]["digest"]  # as a run recorded before data digests
    (run_dir / "run.json").write_text(json.dumps(record))
    train_teacher.main(teacher_run(data, save, "1", 2, "--resume", "auto"))
    assert "digest" not in read_run_record(run_dir)["data"]  # the run keeps the record it started with
