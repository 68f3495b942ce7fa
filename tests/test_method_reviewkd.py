"""ReviewKD (Chen et al., CVPR 2021): the hierarchical context loss against a float64 NumPy loop,
the ABF settings derived from feature shapes against the official per-architecture tables, the
loss-weight warm-up, pair refusal, and short end-to-end runs (two pairs, exact resume)."""
from __future__ import annotations

import argparse
import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from training import student as train_student
from datagen import write_cifar100
from distiller_zoo import METHODS, DistillContext, Features, hcl_loss
from distiller_zoo.base import warmup_factor
from helper.errors import UserError
from helper.loop import Progress
from helpers import (assert_same_run, metrics_rows, numeric_gradient, torch_value_and_grad, train_straight_and_resumed,
                     write_published_teacher)
from models import model_dict


def adaptive_average(x: np.ndarray, size: int) -> np.ndarray:
    """(B, C, H, W) -> (B, C, size, size); cell i spans rows [floor(i*H/size), ceil((i+1)*H/size))."""
    height, width = x.shape[2:]
    out = np.zeros(x.shape[:2] + (size, size))
    for i in range(size):
        for j in range(size):
            rows = slice(i * height // size, -(-(i + 1) * height // size))
            cols = slice(j * width // size, -(-(j + 1) * width // size))
            out[:, :, i, j] = x[:, :, rows, cols].mean(axis=(2, 3))
    return out


def hcl_reference(students: list[np.ndarray], teachers: list[np.ndarray]) -> float:
    """Per level: (MSE + sum of w * MSE of the l x l average-pooled maps, l in 4, 2, 1 with l < H and
    w = 1/2, 1/4, 1/8 in the order used) / (1 + sum of w); summed over levels."""
    total = 0.0
    for fs, ft in zip(students, teachers):
        numerator, denominator, weight = float(np.mean((fs - ft) ** 2)), 1.0, 1.0
        for size in (4, 2, 1):
            if size < fs.shape[2]:
                weight /= 2
                numerator += weight * float(np.mean((adaptive_average(fs, size) - adaptive_average(ft, size)) ** 2))
                denominator += weight
        total += numerator / denominator
    return total


def test_hcl_loss_matches_float64_loop() -> None:
    rng = np.random.default_rng(0)
    shapes = [(2, 3, 8, 8), (2, 4, 5, 5), (2, 2, 4, 4), (2, 3, 2, 2), (2, 5, 1, 1)]  # all pooling cases
    students = [rng.standard_normal(shape) for shape in shapes]
    teachers = [rng.standard_normal(shape) for shape in shapes]
    got = hcl_loss([torch.tensor(f) for f in students], [torch.tensor(f) for f in teachers]).item()
    assert got == pytest.approx(hcl_reference(students, teachers), rel=1e-10)
    single = [(2, 3, 5, 5)]  # gradient of one level, against finite differences of the reference
    fs, ft = rng.standard_normal(single[0]), rng.standard_normal(single[0])
    value, grad = torch_value_and_grad(lambda s, t: hcl_loss([s], [t]), fs, torch.tensor(ft))
    assert value == pytest.approx(hcl_reference([fs], [ft]), rel=1e-10)
    np.testing.assert_allclose(grad, numeric_gradient(lambda x: hcl_reference([x], [ft]), fs), rtol=1e-5, atol=1e-9)


@functools.lru_cache(maxsize=None)
def network_and_shapes(name: str, preact: bool) -> tuple[torch.nn.Module, list[torch.Size]]:
    torch.manual_seed(0)
    net = model_dict[name](num_classes=100)
    return net, train_student.feature_shapes(net, preact, torch.device("cpu"))


def build(student: str, teacher: str, warmup: int = 20):
    method = METHODS["reviewkd"]
    student_net, student_shapes = network_and_shapes(student, method.uses_preact)
    teacher_net, teacher_shapes = network_and_shapes(teacher, method.teacher_uses_preact())
    context = DistillContext(argparse.Namespace(reviewkd_warmup=warmup, model_s=student, model_t=teacher),
                             student_net, teacher_net, student_shapes, teacher_shapes, torch.arange(10) % 100,
                             torch.device("cpu"))
    return method(context), student_net, teacher_net


# The official build_review_kd tables (in_channels shallow to deep; shapes, out_shapes deepest first).
OFFICIAL = {
    ("resnet8x4", "resnet32x4"): ([64, 128, 256, 256], [64, 128, 256, 256], [1, 8, 16, 32], [1, 8, 16, 32]),
    ("ShuffleV2", "resnet32x4"): ([116, 232, 464, 1024], [64, 128, 256, 256], [1, 4, 8, 16], [1, 8, 16, 32]),
    ("MobileNetV2", "vgg13"): ([12, 16, 48, 160, 1280], [128, 256, 512, 512, 512], [1, 2, 4, 8, 16],
                               [1, 4, 4, 8, 16]),
    ("wrn_16_2", "wrn_40_2"): ([32, 64, 128, 128], [32, 64, 128, 128], [1, 8, 16, 32], [1, 8, 16, 32]),
}


@pytest.mark.parametrize("student,teacher", list(OFFICIAL))
def test_abf_settings_and_output_shapes(student: str, teacher: str) -> None:
    in_channels, out_channels, shapes, out_shapes = OFFICIAL[(student, teacher)]
    method, student_net, teacher_net = build(student, teacher)
    abfs = list(method.abfs)[::-1]  # shallow to deep
    assert [abf.conv1[0].in_channels for abf in abfs] == in_channels
    assert [abf.conv2[0].out_channels for abf in abfs] == out_channels
    assert {abf.conv1[0].out_channels for abf in abfs} == {min(512, in_channels[-1])}
    assert [abf.att_conv is not None for abf in abfs] == [True] * (len(abfs) - 1) + [False]
    assert [s[0] for s in method.shapes] == shapes and [s[0] for s in method.out_shapes] == out_shapes
    images = torch.randn(2, 3, 32, 32)
    student_feats, _ = student_net(images, is_feat=True)
    teacher_feats, _ = teacher_net.eval()(images, is_feat=True, preact=True)
    reviewed = method.review([f if f.dim() == 4 else f[:, :, None, None] for f in student_feats[1:]])
    assert [tuple(r.shape) for r in reviewed] == [tuple(t.shape) + (1, 1) * (t.dim() == 2) for t in teacher_feats[1:]]
    features = Features(student_feats, teacher_feats, None, None, None, None, Progress(epoch=20, epochs=240))
    assert torch.isfinite(method.loss(features))


def test_warmup_factor_and_weighted_loss() -> None:
    method, student_net, teacher_net = build("resnet8", "resnet8")
    factors = [warmup_factor(e, method.warmup_epochs) for e in (1, 10, 20, 21, 240)]
    assert factors == [1 / 20, 0.5, 1.0, 1.0, 1.0]
    assert warmup_factor(1, build("resnet8", "resnet8", warmup=0)[0].warmup_epochs) == 1.0
    images = torch.randn(2, 3, 32, 32)
    student_feats, _ = student_net(images, is_feat=True)
    teacher_feats, _ = teacher_net.eval()(images, is_feat=True, preact=True)
    losses = [method.loss(Features(student_feats, teacher_feats, None, None, None, None, Progress(epoch=e)))
              for e in (5, 40)]
    assert losses[0].item() == pytest.approx(losses[1].item() / 4, rel=1e-6)


def test_student_after_relu_teacher_before() -> None:
    assert (METHODS["reviewkd"].uses_preact, METHODS["reviewkd"].teacher_uses_preact()) == (False, True)
    assert METHODS["abound"].teacher_uses_preact() and not METHODS["kd"].teacher_uses_preact()  # as uses_preact


def test_pairs_of_unequal_depth_are_refused() -> None:
    with pytest.raises(UserError, match="MobileNetV2 has 5 .* resnet32x4 has 4"):
        build("MobileNetV2", "resnet32x4")


@pytest.fixture(scope="module")
def small_cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar100(tmp_path_factory.mktemp("cifar_small"), n_train=16, n_test=8, seed=0)


@pytest.fixture(scope="module")
def resnet32x4_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_published_teacher(tmp_path_factory.mktemp("teacher_save"), "resnet32x4")


@pytest.mark.slow
@pytest.mark.parametrize("student", ["resnet8x4", "ShuffleV2"])
def test_trains_one_epoch(student: str, resnet32x4_teacher: Path, small_cifar: Path, tmp_path: Path) -> None:
    train_student.main(["--path_t", str(resnet32x4_teacher), "--distill", "reviewkd", "--model_s", student,
                        "--trial", "1", "--epochs", "1", "--batch_size", "8", "--data_folder", str(small_cifar),
                        "--save_folder", str(tmp_path), "--device", "cpu", "--no_progress"])
    run = tmp_path / "student" / "student_model" / f"reviewkd_cifar100_S_{student}_T_resnet32x4_r_1_a_0_b_5_trial_1"
    (row,) = metrics_rows(run)
    assert float(row["reviewkd"]) > 0 and np.isfinite(float(row["train_loss"]))
    state = torch.load(run / f"{student}_last.pth", weights_only=True)
    assert any(key.startswith("abfs.0.conv1") for key in state["task"]["method"])


@pytest.mark.slow
def test_resume_reproduces_the_warmup(small_cifar: Path, tmp_path: Path) -> None:
    teacher = write_published_teacher(tmp_path / "teacher", "resnet8")

    def argv(save: Path, epochs: int, *extra: str) -> list[str]:
        return ["--path_t", str(teacher), "--distill", "reviewkd", "--model_s", "resnet8", "--reviewkd_warmup", "4",
                "--epochs", str(epochs), "--lr_decay_epochs", "1", "--batch_size", "8", "--data_folder",
                str(small_cifar), "--save_folder", str(save), "--device", "cpu", "--no_progress", "--seed", "5", *extra]

    a, b = train_straight_and_resumed(argv, tmp_path)
    assert_same_run(a, b)  # weights, ABF state, metrics
    assert len(metrics_rows(a)) == 2
