"""The three command lines as a researcher meets them: -t/--trial and its per-script defaults, -h
showing every default and only what the script accepts, every numeric flag range-checked before
anything is loaded, the earlier --distill names, and errors that point the right way."""
from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import pytest

from training import student as train_student
from training import teacher as train_teacher
from training import transfer as transfer_student
from helper.options import TRAINING_RANGES
from helpers import write_published_teacher

SCRIPTS = {"train_teacher.py": train_teacher, "train_student.py": train_student,
           "transfer_student.py": transfer_student}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_published_teacher(tmp_path_factory.mktemp("teacher_save"), "resnet8")


def test_trial_short_flag_and_per_script_defaults(teacher: Path, tmp_path: Path) -> None:
    """RepDistiller's and the DCD/RRD code's defaults: train_teacher 0, train_student '1', transfer 0."""
    assert train_teacher.parse_args([]).trial == "0"
    assert train_student.parse_args(["--path_t", str(teacher)]).trial == "1"
    assert transfer_student.parse_args(["--path_s", "x.pth"]).trial == "0"
    assert train_teacher.parse_args(["-t", "3"]).trial == "3"
    student = train_student.parse_args(["--path_t", str(teacher), "-t", "2"])
    assert (student.trial, student.seed) == ("2", 2)
    assert train_student.run_name(train_student.parse_args(["--path_t", str(teacher)])) == \
        "kd_cifar100_S_resnet8_T_resnet8_r_0.1_a_0.9_b_0_trial_1"
    assert train_teacher.teacher_folder_name("resnet32x4", "cifar100", train_teacher.parse_args([]).trial) == \
        "resnet32x4_vanilla"  # the published teachers' folder name, unchanged


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_shows_every_default(script: str) -> None:
    parser = SCRIPTS[script].build_parser()
    formatter = parser.formatter_class(prog=script)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{script} {action.option_strings} has no help"
        text = formatter._get_help_string(action) % {"default": action.default}
        if action.default is None:  # computed defaults say in words what they become
            assert "default" in text or "required" in text, (script, action.option_strings, text)
        else:
            assert f"(default: {'off' if action.default is False else action.default})" in text, text


def test_transfer_help_tells_its_own_truth() -> None:
    text = transfer_student.build_parser().format_help()
    flat = " ".join(text.split())
    assert "training epochs (default: 120)" in flat and "(default: 30,60,90)" in flat
    assert "150,180,210" not in flat and not re.search(r"(?<!tiny)imagenet", flat.lower())
    assert "--image_size" not in flat and "--decode" not in flat  # refused there, so not listed
    teacher_help = " ".join(train_teacher.build_parser().format_help().split())
    assert "(default: 240)" in teacher_help and "--image_size" in teacher_help


def numeric_flags(script: str) -> list[tuple[str, type]]:
    return [(action.option_strings[-1], action.type) for action in SCRIPTS[script].build_parser()._actions
            if action.type in (int, float) and action.option_strings]


def _argv(script: str, tmp_path: Path) -> list[str]:
    """Arguments that would fail only later, when files are read (so a range error must come first)."""
    missing = str(tmp_path / "missing.pth")
    path = {"train_student.py": ["--path_t", missing], "transfer_student.py": ["--path_s", missing]}
    return [*path.get(script, []), "--data_folder", str(tmp_path / "no_data"), "--save_folder", str(tmp_path)]


CASES = [(script, flag, kind) for script in SCRIPTS for flag, kind in numeric_flags(script)]


@pytest.mark.parametrize("script,flag,kind", CASES, ids=[f"{s}{f}" for s, f, _ in CASES])
def test_every_numeric_flag_is_range_checked_first(script: str, flag: str, kind: type, tmp_path: Path, capsys,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLERS_OFFLINE", "1")
    for bad in ("-1", "nan", "inf") if kind is float else ("-1",):
        with pytest.raises(SystemExit) as info:
            SCRIPTS[script].main([*_argv(script, tmp_path), flag, bad])
        err = " ".join(capsys.readouterr().err.split())
        assert info.value.code == 2 and err.startswith("error: "), err
        named = {"-r": "--gamma", "-a": "--alpha", "-b": "--beta"}.get(flag, flag)
        assert named in err or flag in err, (flag, bad, err)
        assert "does not exist" not in err and "not found" not in err  # nothing was loaded yet
        assert not list(tmp_path.glob("*/*/*")), "a run folder was created before the flags were checked"


@pytest.mark.parametrize("flag,value", [("--kd_T", "0"), ("--momentum", "1"), ("--lr_decay_rate", "0"),
                                        ("--nce_m", "1.5"), ("--num_workers", "-2"), ("--seed", str(2**40))])
def test_edges_of_ranges(flag: str, value: str, teacher: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        train_student.main(["--path_t", str(teacher), flag, value])
    assert flag in capsys.readouterr().err


def test_training_ranges_cover_every_numeric_training_flag() -> None:
    parser = argparse.ArgumentParser()
    from helper.options import add_training_args

    add_training_args(parser)
    numeric = {action.dest for action in parser._actions if action.type in (int, float)}
    assert numeric - {"image_size"} == {name for name, *_ in TRAINING_RANGES}  # image_size: imagenet's own check
    assert all(math.isfinite(low) for _, low, *_ in TRAINING_RANGES if low is not None)


@pytest.mark.parametrize("earlier,key", [("icd", "dcd"), ("rcd", "rrd")])
def test_earlier_method_names(earlier: str, key: str, teacher: Path, capsys) -> None:
    opt = train_student.parse_args(["--path_t", str(teacher), "--distill", earlier])
    assert opt.distill == key and (opt.gamma, opt.alpha, opt.beta) == (1, 0, 1)
    assert train_student.run_name(opt).startswith(f"{key}_cifar100_")
    notes = capsys.readouterr().out.strip().splitlines()
    assert notes == [f"--distill {earlier} is the earlier name of --distill {key}; training {key}."]


def test_missing_checkpoints_point_the_right_way(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        transfer_student.main(["--path_s", str(tmp_path / "student.pth"), "--save_folder", str(tmp_path)])
    err = " ".join(capsys.readouterr().err.split())
    assert "student checkpoint" in err and "does not exist" in err
    assert "fetch" not in err and "teacher" not in err
    with pytest.raises(SystemExit):
        transfer_student.main(["--save_folder", str(tmp_path)])
    assert "fetch" not in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_student.main(["--path_t", str(tmp_path / "teacher.pth")])
    assert "fetch_pretrained_teachers.sh" in " ".join(capsys.readouterr().err.split())
