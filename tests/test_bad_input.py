"""Every bad input gets a one-paragraph 'error: ...' (exit 2, no traceback) and loses nothing on disk."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from training import student as train_student
from training import teacher as train_teacher
from training import transfer as transfer_student
from datagen import write_cifar100
from helpers import run_script, write_published_teacher


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_published_teacher(tmp_path_factory.mktemp("teacher_save"), "resnet8")


def fails(main, argv: list[str], capsys: pytest.CaptureFixture, *needles: str) -> str:
    """Run an entry point in-process; assert exit 2 and that the message contains every needle."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = " ".join(capsys.readouterr().err.split())  # messages are wrapped at 100 columns
    assert info.value.code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def student(teacher: Path, data: Path, save: Path, *extra: str) -> list[str]:
    return ["--path_t", str(teacher), "--model_s", "resnet8", "--epochs", "1", "--data_folder", str(data),
            "--save_folder", str(save), "--device", "cpu", "--no_progress", *extra]


def test_path_t_problems(tmp_path: Path, teacher: Path, cifar_folder: Path, capsys) -> None:
    save = tmp_path / "save"
    fails(train_student.main, student(tmp_path / "nope.pth", cifar_folder, save), capsys, "does not exist")
    fails(train_student.main, student(teacher.parent, cifar_folder, save), capsys, "is a folder",
          "ckpt_epoch_240.pth")
    garbage = tmp_path / "resnet8_vanilla" / "garbage.pth"
    garbage.parent.mkdir()
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    fails(train_student.main, student(garbage, cifar_folder, save), capsys, "truncated, corrupt")
    truncated = tmp_path / "resnet8_vanilla" / "truncated.pth"
    truncated.write_bytes(teacher.read_bytes()[: teacher.stat().st_size // 2])
    fails(train_student.main, student(truncated, cifar_folder, save), capsys, "truncated, corrupt")
    not_ckpt = tmp_path / "resnet8_vanilla" / "list.pth"
    torch.save([1, 2, 3], not_ckpt)
    fails(train_student.main, student(not_ckpt, cifar_folder, save), capsys, "'model' state_dict")


def test_teacher_arch_unknown_or_mismatched(tmp_path: Path, teacher: Path, cifar_folder: Path, capsys) -> None:
    unknown = tmp_path / "my_teacher" / "ckpt.pth"
    unknown.parent.mkdir()
    unknown.write_bytes(teacher.read_bytes())
    fails(train_student.main, student(unknown, cifar_folder, tmp_path / "s"), capsys, "my_teacher",
          "Cannot tell the teacher's architecture")
    wrong = tmp_path / "resnet20_vanilla" / "ckpt.pth"  # folder says resnet20, weights are resnet8
    wrong.parent.mkdir()
    wrong.write_bytes(teacher.read_bytes())
    fails(train_student.main, student(wrong, cifar_folder, tmp_path / "s"), capsys, "'resnet8'", "'resnet20'")


def test_teacher_trained_on_other_dataset(teacher: Path, tmp_path: Path, capsys) -> None:
    fails(train_student.main, student(teacher, tmp_path, tmp_path / "s", "--dataset", "digits"), capsys,
          "100 output classes", "needs 10")


def test_unknown_names_and_bad_flags(teacher: Path, cifar_folder: Path, tmp_path: Path, capsys) -> None:
    save = tmp_path / "save"
    fails(train_student.main, student(teacher, cifar_folder, save) + ["--model_s", "resnet9"], capsys,
          "Unknown --model_s 'resnet9'", "resnet8x4")
    fails(train_student.main, student(teacher, cifar_folder, save, "--distill", "kdd"), capsys,
          "Unknown --distill 'kdd'", "crd")
    fails(train_teacher.main, ["--model", "resnet_8"], capsys, "Unknown --model")
    for name, meant in (("fitnet", "hint"), ("FitNet", "hint"), ("KD", "kd"), ("crdd", "crd"), ("rcd", None)):
        if meant is None:  # an earlier name is accepted as it is
            assert train_student.parse_args(student(teacher, cifar_folder, save, "--distill", name)).distill == "rrd"
        else:
            fails(train_student.main, student(teacher, cifar_folder, save, "--distill", name), capsys,
                  f"Did you mean '{meant}'?")
    for name, meant in (("mobilenetv2", "MobileNetV2"), ("resnet8X4", "resnet8x4"), ("wrn-40-2", "wrn_40_2")):
        fails(train_teacher.main, ["--model", name], capsys, f"Unknown --model '{name}'. Did you mean '{meant}'?")
    assert "Did you mean" not in fails(train_teacher.main, ["--model", "transformer"], capsys, "Choose one of")
    for flag in ("-r", "-a", "-b"):
        fails(train_student.main, student(teacher, cifar_folder, save, flag, "-1"), capsys, "must be >= 0")
    for bad in ("150,120", "a,b", "", "150;180"):
        fails(train_student.main, student(teacher, cifar_folder, save, "--lr_decay_epochs", bad), capsys,
              "--lr_decay_epochs", "increasing")
    fails(train_student.main, student(teacher, cifar_folder, save, "--batch_size", "501"), capsys,
          "larger than the 500 training images")
    fails(train_student.main, student(teacher, cifar_folder, save, "--distill", "hint", "--hint_layer", "7"),
          capsys, "--hint_layer 7")
    big = write_published_teacher(tmp_path / "t2", "resnet8x4")
    fails(train_student.main, student(big, cifar_folder, save, "--distill", "fsp"), capsys, "fsp", "channels")


def test_all_zero_weights_warn(teacher: Path, cifar_folder: Path) -> None:
    with pytest.warns(UserWarning, match="all 0"):
        train_student.parse_args(["--path_t", str(teacher), "-r", "0", "-a", "0", "-b", "0"])


def test_dataset_missing_or_corrupt(teacher: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DISTILLERS_OFFLINE", "1")
    fails(train_teacher.main, ["--model", "resnet8", "--data_folder", str(tmp_path / "empty"), "--save_folder",
                               str(tmp_path / "s")], capsys, "cifar-100-python")
    data = tmp_path / "data"
    write_cifar100(data, n_train=100, n_test=20)
    (data / "cifar-100-python" / "train").write_bytes(pickle.dumps({"data": "nonsense"})[:20])
    fails(train_teacher.main, ["--model", "resnet8", "--data_folder", str(data), "--save_folder",
                               str(tmp_path / "s2")], capsys, "corrupt")


def test_unwritable_save_folder(teacher: Path, cifar_folder: Path, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    fails(train_student.main, student(teacher, cifar_folder, blocker / "save"), capsys, "Cannot write",
          "--save_folder")


def test_wrong_arch_for_path_s(teacher: Path, tmp_path: Path, capsys) -> None:
    fails(transfer_student.main, ["--path_s", str(teacher), "--model_s", "wrn_16_2", "--dataset", "digits",
                                  "--save_folder", str(tmp_path)], capsys, "'resnet8'", "'wrn_16_2'")


@pytest.mark.slow
def test_finished_run_is_not_overwritten(teacher: Path, cifar_folder: Path, tmp_path: Path, capsys) -> None:
    save = tmp_path / "save"
    train_student.main(student(teacher, cifar_folder, save, "--distill", "kd"))
    (run_dir,) = (save / "student" / "student_model").iterdir()
    before = (run_dir / "resnet8_last.pth").read_bytes()
    fails(train_student.main, student(teacher, cifar_folder, save, "--distill", "kd"), capsys,
          "already holds a finished run (1 epoch,", "--trial")
    assert (run_dir / "resnet8_last.pth").read_bytes() == before


@pytest.mark.slow
def test_errors_from_the_shell_have_no_traceback(tmp_path: Path) -> None:
    result = run_script("train_student.py", "--path_t", "missing.pth", cwd=tmp_path, check=False)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr
