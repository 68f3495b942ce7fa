"""A run is what it was trained with (helper/provenance.py): the record each run folder keeps, and
the refusals built on it (resume, skip, checkpoints of another dataset), on the offline digits data."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import analyze
from training import student as train_student
from training import teacher as train_teacher
from dataset.digest import known_content
from distiller_zoo.base import METHODS, unused_method_flags
from helper.errors import UserError
from helper.run_folder import replacement_hint
from helper.provenance import (NOT_TRAINING, check_same_run, identity_differences, read_run_record,
                               settings_differences, training_settings, weights_digest)
from models import model_dict
from test_bad_input import fails

COMMON = ["--dataset", "digits", "--epochs", "1", "--device", "cpu", "--no_progress", "--compile", "off"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two digits teachers (trials 0 and 2) and one 1-epoch kd student of the first (--save_freq 1)."""
    save = tmp_path_factory.mktemp("provenance") / "save"
    for trial in ("0", "2"):
        train_teacher.main(["--model", "resnet8", "--trial", trial, "--save_folder", str(save), *COMMON])
    teachers = [save / "models" / folder / "resnet8_last.pth" for folder in
                ("resnet8_digits_vanilla", "resnet8_digits_vanilla_trial_2")]
    student = ["--path_t", str(teachers[0]), "--save_folder", str(save), "--save_freq", "1", *COMMON]
    train_student.main(student)
    return {"save": save, "teacher_a": teachers[0], "teacher_b": teachers[1],
            "run_dir": save / "student" / "student_model" / "kd_digits_S_resnet8_T_resnet8_r_0.1_a_0.9_b_0_trial_1"}


def student_args(runs: dict[str, Path], teacher: str = "teacher_a", *extra: str) -> list[str]:
    return ["--path_t", str(runs[teacher]), "--save_folder", str(runs["save"]), *COMMON, *extra]


def test_weights_digest_is_the_content_not_the_file() -> None:
    weights = model_dict["resnet8"](num_classes=10).state_dict()
    digest = weights_digest(weights)
    assert weights_digest(dict(reversed(list(weights.items())))) == digest
    assert weights_digest({f"module.{key}": value for key, value in weights.items()}) == digest
    changed = {key: value.clone() for key, value in weights.items()}
    changed["fc.bias"][3] += 1e-6
    assert weights_digest(changed) != digest and len(digest) == 16


def test_settings_are_every_training_flag_of_the_method() -> None:
    opt = train_student.build_parser().parse_args(["--distill", "dkd", "--path_t", "x"])
    settings = training_settings(opt, unused_method_flags("dkd"))
    assert {"dkd_beta", "kd_T", "logit_stand", "epochs", "learning_rate", "seed", "batch_size"} <= set(settings)
    assert not NOT_TRAINING & set(settings)
    wttm_only = {flag.dest for flag in METHODS["wttm"].flags}
    assert wttm_only <= unused_method_flags("dkd") and not wttm_only & set(settings)
    assert {flag.dest for flag in METHODS["kd"].flags} <= set(settings)  # the -a term of every method


def test_differences_list_old_and_new_values() -> None:
    assert settings_differences({"epochs": 1, "kd_T": 4.0}, {"epochs": 1.0, "kd_T": 2.0}) == [("kd_T", 4.0, 2.0)]
    old = {"settings": {"epochs": 3}, "teacher": {"digest": "a" * 16, "arch": "resnet8"},
           "data": {"train": 100, "test": 10}}
    new = {"settings": {"epochs": 3}, "teacher": {"digest": "b" * 16, "arch": "resnet8"}, "data": {"train": 90}}
    names = [name for name, _, _ in identity_differences(old, new)]
    assert names == ["teacher checkpoint", "data train"]
    with pytest.raises(UserError, match="data train: 100 -> 90"):
        check_same_run(Path("run"), old, new, "resume")
    check_same_run(Path("run"), None, new, "resume")  # a run from before records: nothing to compare


def test_run_record_written_at_start_and_in_checkpoints(runs: dict[str, Path]) -> None:
    record = read_run_record(runs["run_dir"])
    assert record["settings"]["kd_T"] == 4.0 and record["settings"]["epochs"] == 1
    sizes = dict(record["data"])
    digest = sizes.pop("digest")  # the content of the splits (built-in digits: computed directly)
    assert sizes == {"train": 1437, "test": 360, "num_classes": 10}
    assert digest == known_content("digits", "unused") and set(digest) == {"train", "test"}
    teacher = record["teacher"]
    state = torch.load(runs["teacher_a"], weights_only=True)
    assert teacher["digest"] == weights_digest(state["model"]) and teacher["dataset"] == "digits"
    assert teacher["accuracy"] == pytest.approx(state["best_acc"], abs=1e-3)
    saved = torch.load(runs["run_dir"] / "resnet8_last.pth", weights_only=True)
    assert saved["run"] == record and record["code_version"]


def test_another_teacher_is_a_conflict_for_skip_and_resume(runs: dict[str, Path], capsys) -> None:
    same = train_student.run_plan(train_student.parse_args(student_args(runs)))
    assert same.checkpoint_status() == "finished"
    other = train_student.run_plan(train_student.parse_args(student_args(runs, "teacher_b")))
    assert other.checkpoint_status() == "conflict"
    assert [name for name, _, _ in other.differences()] == ["teacher checkpoint"]
    fails(train_student.main, student_args(runs, "teacher_b", "--resume", "auto"), capsys,
          "Cannot resume", "teacher checkpoint: resnet8", "--trial")
    fails(train_student.main, student_args(runs, "teacher_a", "--resume", "auto", "--kd_T", "2"), capsys,
          "kd_T: 4.0 -> 2.0")
    unused = train_student.run_plan(train_student.parse_args(student_args(runs, "teacher_a", "--wttm_l", "0.5")))
    assert unused.checkpoint_status() == "finished"  # a flag kd never reads does not make another run


def test_checkpoint_of_another_dataset_refused_before_data(runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    nowhere = str(tmp_path / "no_data")  # loading any dataset from here would fail differently
    args = ["--path_t", str(runs["teacher_a"]), "--dataset", "cifar10", "--data_folder", nowhere,
            "--save_folder", str(tmp_path), "--epochs", "1"]
    fails(train_student.main, args, capsys, "trained on digits", "--dataset digits")
    student = runs["run_dir"] / "resnet8_last.pth"
    fails(analyze.main, ["--path_t", str(runs["teacher_a"]), "--path_s", str(student), "--dataset", "cifar10",
                         "--data_folder", nowhere, "--out", str(tmp_path / "a")], capsys, "trained on digits")
    fails(train_student.main, [*args[:3], "cifar100", *args[4:]], capsys, "trained on digits")


def test_published_teacher_without_record_checked_by_class_count(tmp_path: Path, capsys) -> None:
    from helpers import write_published_teacher

    teacher = write_published_teacher(tmp_path / "save", "resnet8", num_classes=100)
    fails(train_student.main, ["--path_t", str(teacher), "--dataset", "cifar10", "--data_folder",
                               str(tmp_path / "none"), "--save_folder", str(tmp_path)], capsys,
          "100 output classes", "needs 10")


def test_runs_without_a_record_keep_working(runs: dict[str, Path], tmp_path: Path) -> None:
    old = tmp_path / "old_run"
    old.mkdir()
    state = torch.load(runs["run_dir"] / "resnet8_last.pth", weights_only=True)
    del state["run"]
    torch.save(state, old / "resnet8_last.pth")
    check_same_run(old, None, read_run_record(runs["run_dir"]), "resume")
    assert read_run_record(old) is None


def test_damaged_last_checkpoint_names_a_different_file_to_restart_from(runs: dict[str, Path], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "resnet8_last.pth").write_bytes(b"not a checkpoint")
    assert "delete the run folder" in replacement_hint(run_dir, run_dir / "resnet8_last.pth")
    (run_dir / "ckpt_epoch_1.pth").write_bytes((runs["run_dir"] / "ckpt_epoch_1.pth").read_bytes())
    hint = replacement_hint(run_dir, run_dir / "resnet8_last.pth")
    assert "'ckpt_epoch_1.pth' (epoch 1)" in hint and "restarts from epoch 1" in hint


def test_damaged_record_named_in_the_error(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text("{ not json")
    with pytest.raises(UserError, match="run.json' is damaged"):
        read_run_record(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"settings": {}}))
    assert read_run_record(tmp_path) == {"settings": {}}
