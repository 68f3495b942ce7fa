"""helper/run_folder.py: run folder names invert, checkpoint names, the stage filter."""
from __future__ import annotations

from pathlib import Path

import pytest

from helper.run_folder import (Stage, best_checkpoint, checkpoint_stage, epoch_checkpoint, epoch_checkpoints,
                               is_finished, last_checkpoint, metrics_file, parse_folder_name, resumes_stage, run_folder,
                               student_folder_name, teacher_folder_name, transfer_folder_name)


@pytest.mark.parametrize("distill, model_s, model_t", [("kd", "resnet8x4", "resnet32x4"),
                                                       ("sdd_dkd", "wrn_16_2", "wrn_40_2"),
                                                       ("crd", "MobileNetV2", "ResNet50")])
def test_student_folder_name_inverts(distill: str, model_s: str, model_t: str) -> None:
    name = student_folder_name(distill, "cifar100", model_s, model_t, 0.1, 0.9, 0.0, "2")
    assert name == f"{distill}_cifar100_S_{model_s}_T_{model_t}_r_0.1_a_0.9_b_0_trial_2"
    assert parse_folder_name("student", name) == {"distill": distill, "dataset": "cifar100", "model_s": model_s,
                                                  "model_t": model_t, "gamma": "0.1", "alpha": "0.9", "beta": "0",
                                                  "trial": "2"}


def test_teacher_and_transfer_folder_names_invert(tmp_path: Path) -> None:
    assert teacher_folder_name("resnet32x4", "cifar100", "0") == "resnet32x4_vanilla"
    assert parse_folder_name("vanilla", "resnet32x4_vanilla") == {"stem": "resnet32x4", "trial": "0"}
    name = teacher_folder_name("wrn_40_2", "digits", "3")
    assert name == "wrn_40_2_digits_vanilla_trial_3"
    assert parse_folder_name("vanilla", name) == {"stem": "wrn_40_2_digits", "trial": "3"}
    student = tmp_path / "kd_cifar100_S_resnet8_T_resnet20_r_0.1_a_0.9_b_0_trial_1" / "resnet8_best.pth"
    name = transfer_folder_name("stl10", "resnet8", student, "0")
    assert parse_folder_name("transfer", name) == {"dataset": "stl10", "model_s": "resnet8", "trial": "0",
                                                   "source": student.parent.name}
    assert parse_folder_name("student", "resnet32x4_vanilla") == {}
    assert parse_folder_name("vanilla", "kd_cifar100_S_a_T_b") == {}


def test_checkpoint_names_and_stages(tmp_path: Path) -> None:
    run_dir = run_folder(tmp_path, "student", "run")
    assert run_dir == tmp_path / "student" / "student_model" / "run"
    assert last_checkpoint(run_dir, "resnet8").name == "resnet8_last.pth"
    assert best_checkpoint(run_dir, "resnet8").name == "resnet8_best.pth"
    assert metrics_file(run_dir, Stage.MAIN).name == "metrics.csv"
    assert metrics_file(run_dir, Stage.INIT).name == "metrics_init.csv"
    run_dir.mkdir(parents=True)
    for epoch in (40, 120, 80):
        epoch_checkpoint(run_dir, epoch).touch()
    (run_dir / "ckpt_epoch_x.pth").touch()
    assert [epoch for epoch, _ in epoch_checkpoints(run_dir)] == [120, 80, 40]
    # checkpoints store the stage's value; those from before stages existed are of the main stage
    assert resumes_stage({"epoch": 3}, Stage.MAIN) and not resumes_stage(None, Stage.MAIN)
    assert resumes_stage({"stage": "init"}, Stage.INIT) and not resumes_stage({"stage": "init"}, Stage.MAIN)
    assert checkpoint_stage({"stage": "main"}) is Stage.MAIN and checkpoint_stage({"stage": "other"}) is None
    assert is_finished({"epoch": 5, "stage": "main"}, 5) and not is_finished({"epoch": 5, "stage": "init"}, 5)
    assert not is_finished({"epoch": 5, "partial": {"step": 1}}, 5)
