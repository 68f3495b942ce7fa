"""train_student.py: every --distill key end to end, and the seed command lines (RepDistiller, DCD/RRD)."""
from __future__ import annotations

import csv
import math
import shlex
from pathlib import Path

import pytest
import torch

from training import student as train_student
from datagen import write_cifar100
from distiller_zoo import METHODS
from helpers import run_script, write_published_teacher
from models import model_dict

KEYS = list(METHODS)  # every registered method, new files included


@pytest.fixture(scope="module")
def published_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_published_teacher(tmp_path_factory.mktemp("teacher_save"), "resnet8")


@pytest.fixture(scope="module")
def two_step_cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """128 train / 64 test images: two steps of 64 per epoch, enough to exercise every method's step."""
    return write_cifar100(tmp_path_factory.mktemp("two_step_cifar"), n_train=128, n_test=64, seed=2)


CASES = [(key, []) for key in KEYS] + [(key, ["-a", "1"]) for key in KEYS if METHODS[key].sweep_with_kd]


@pytest.mark.registry
@pytest.mark.slow
@pytest.mark.parametrize("key,weights", CASES, ids=[k + ("+kd" if w else "") for k, w in CASES])
def test_every_method_trains(key: str, weights: list[str], published_teacher: Path, two_step_cifar: Path,
                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--path_t", str(published_teacher), "--distill", key, "--model_s", "resnet8", *weights,
            "--epochs", "1", "--init_epochs", "1", "--batch_size", "64", "--data_folder", str(two_step_cifar),
            "--save_folder", str(tmp_path), "--nce_k", "200", "--device", "cpu", "--no_progress",
            "--print_freq", "2"]
    train_student.main(argv)
    opt = train_student.parse_args(argv)
    notice = METHODS[key].warmup_notice(opt)  # 1 epoch is shorter than any warm-up: said once, at start
    assert capsys.readouterr().out.count(notice) == 1 if notice else True
    run_dir = tmp_path / "student" / "student_model" / train_student.run_name(opt)
    assert run_dir.name.startswith(f"{key}_cifar100_S_resnet8_T_resnet8_r_")
    with open(run_dir / "metrics.csv") as handle:
        row = next(csv.DictReader(handle))
    named = [name for name in row if name in ("ce", "kl", key)]
    assert "ce" in named
    if METHODS[key].has_method_loss and opt.beta > 0:
        assert key in named, row
    for name in named + ["train_loss", "test_acc1"]:
        assert math.isfinite(float(row[name])), (name, row)
    if METHODS[key].init_stage:
        assert (run_dir / "metrics_init.csv").is_file()
    state = torch.load(run_dir / "resnet8_last.pth", map_location="cpu", weights_only=True)
    assert state["arch"] == "resnet8" and state["model_t"] == "resnet8" and state["epoch"] == 1
    student = model_dict["resnet8"](num_classes=100)
    student.load_state_dict(state["model"], strict=True)
    assert list(state["task"]["method"]) == list(train_student_method_state_keys(key, opt))
    assert (tmp_path / "student" / "student_tensorboards" / run_dir.name).is_dir()


def train_student_method_state_keys(key: str, opt) -> list[str]:
    """State-dict keys a freshly built method has (the checkpoint must hold exactly these)."""
    from distiller_zoo import DistillContext

    student = model_dict["resnet8"](num_classes=100)
    teacher = model_dict["resnet8"](num_classes=100)
    cls = METHODS[key]
    shapes_s = train_student.feature_shapes(student, cls.uses_preact, torch.device("cpu"))
    shapes_t = train_student.feature_shapes(teacher, cls.teacher_uses_preact(), torch.device("cpu"))
    labels = torch.arange(128) % 100
    return list(cls(DistillContext(opt, student, teacher, shapes_s, shapes_t, labels, torch.device("cpu")))
                .state_dict())


SEED_LINES = [
    ("python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill kd "
     "--model_s resnet8x4 -r 0.1 -a 0.9 -b 0 --trial 1", "kd", (0.1, 0.9, 0.0)),
    ("python train_student.py --path_t <teacher> --distill dcd --model_s resnet8x4 -a 0 -b 1 --trial 1",
     "dcd", (1.0, 0.0, 1.0)),
    ("python train_student.py --path_t <teacher> --distill dcd --model_s resnet8x4 -a 1 -b 1 --trial 1",
     "dcd", (1.0, 1.0, 1.0)),
    ("python train_student.py --path_t <teacher> --distill rrd --model_s resnet8x4 -a 0 -b 1 --trial 1",
     "rrd", (1.0, 0.0, 1.0)),
    ("python train_student.py --path_t <teacher> --distill simkd --model_s resnet8x4 --trial 1",
     "simkd", (0.0, 0.0, 1.0)),
    ("python train_student.py --path_t <teacher> --distill catkd --model_s resnet8x4 --trial 1",
     "catkd", (1.0, 0.0, 15.0)),
]


@pytest.mark.parametrize("line,key,weights", SEED_LINES)
def test_seed_command_lines_resolve(line: str, key: str, weights: tuple, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    teacher = write_published_teacher(tmp_path / "save", "resnet32x4")
    argv = shlex.split(line.replace("<teacher>", str(teacher.relative_to(tmp_path))))[2:]
    opt = train_student.parse_args(argv)
    assert (opt.model_t, opt.model_s, opt.distill) == ("resnet32x4", "resnet8x4", key)
    assert (opt.gamma, opt.alpha, opt.beta) == weights
    assert (opt.epochs, opt.batch_size, opt.learning_rate, opt.lr_decay_epochs_list) == (240, 64, 0.05,
                                                                                         [150, 180, 210])
    assert train_student.run_name(opt) == (f"{key}_cifar100_S_resnet8x4_T_resnet32x4_r_{weights[0]:g}_a_"
                                           f"{weights[1]:g}_b_{weights[2]:g}_trial_1")


@pytest.mark.registry
@pytest.mark.parametrize("key", KEYS)
def test_default_weights_when_omitted(key: str, published_teacher: Path) -> None:
    method = METHODS[key]
    opt = train_student.parse_args(["--path_t", str(published_teacher), "--distill", key])
    assert (opt.gamma, opt.alpha, opt.beta) == (method.default_gamma, method.default_alpha, method.default_beta)


# -r, -a, -b of the papers' CIFAR-100 settings (RepDistiller's scripts and each method's official code)
PAPER_WEIGHTS = {"kd": (0.1, 0.9, 0), "hint": (1, 0, 100), "attention": (1, 0, 1000), "similarity": (1, 0, 3000),
                 "correlation": (1, 0, 0.02), "vid": (1, 0, 1), "crd": (1, 0, 0.8), "rkd": (1, 0, 1),
                 "pkt": (1, 0, 30000), "abound": (1, 0, 1), "factor": (1, 0, 200), "fsp": (1, 0, 50),
                 "nst": (1, 0, 50), "rrd": (1, 0, 1), "dcd": (1, 0, 1), "dkd": (1, 0, 1), "dist": (1, 0, 2),
                 "wsld": (0, 0, 1), "wttm": (1, 0, 4), "kdsvd": (1, 0, 1), "reviewkd": (1, 0, 5),
                 "ctkd": (0.1, 0, 0.9), "mlkd": (0.1, 0, 0.9), "simkd": (0, 0, 1), "catkd": (1, 0, 15)}


@pytest.mark.parametrize("key", sorted(PAPER_WEIGHTS))
def test_declared_default_weights_are_the_papers(key: str) -> None:
    method = METHODS[key]
    assert (method.default_gamma, method.default_alpha, method.default_beta) == PAPER_WEIGHTS[key]


def test_teacher_arch_from_folder_name_longest_prefix(tmp_path: Path) -> None:
    for folder, arch in (("wrn_40_2_vanilla", "wrn_40_2"), ("resnet32x4_vanilla", "resnet32x4"),
                         ("resnet110_trial_2", "resnet110"), ("vgg13_vanilla", "vgg13")):
        assert train_student.teacher_arch(str(tmp_path / folder / "ckpt.pth"), {"model": {}}) == arch
    assert train_student.teacher_arch(str(tmp_path / "x" / "c.pth"), {"model": {}, "arch": "vgg8"}) == "vgg8"


def test_small_archs_get_small_learning_rate(published_teacher: Path) -> None:
    for arch, lr in (("MobileNetV2", 0.01), ("ShuffleV1", 0.01), ("ShuffleV2", 0.01), ("resnet8", 0.05)):
        opt = train_student.parse_args(["--path_t", str(published_teacher), "--model_s", arch])
        assert opt.learning_rate == lr


@pytest.mark.slow
def test_cli_subprocess_kd(published_teacher: Path, cifar_folder: Path, tmp_path: Path) -> None:
    result = run_script("train_student.py", "--path_t", str(published_teacher), "--distill", "kd", "--model_s",
                        "resnet8", "-r", "0.1", "-a", "0.9", "-b", "0", "--trial", "1", "--epochs", "1",
                        "--data_folder", str(cifar_folder), "--no_progress", cwd=tmp_path)
    assert "student best accuracy" in result.stdout
    assert (tmp_path / "save" / "student" / "student_model" /
            "kd_cifar100_S_resnet8_T_resnet8_r_0.1_a_0.9_b_0_trial_1" / "resnet8_best.pth").is_file()
