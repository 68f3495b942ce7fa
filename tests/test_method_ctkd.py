"""CTKD: gradient reversal, the cosine curriculum, the temperature mapping, the loss against a float64
re-derivation, and exact resume of the learned temperature."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from training import student as train_student
from distiller_zoo import METHODS, DistillContext, Features, GradientReversal, Progress, curriculum_lambda
from distiller_zoo.kd import normalize
from helpers import (assert_same_run, kd_reference, metrics_rows, train_straight_and_resumed,
                     write_published_teacher)
from models import model_dict

TOL = 1e-5


def build_method(**flags: float) -> torch.nn.Module:
    options = dict(t_start=1.0, t_end=20.0, lambda_min=0.0, lambda_max=1.0, lambda_epochs=10, logit_stand=False)
    options.update(flags)
    student, teacher = model_dict["resnet8"](num_classes=10), model_dict["resnet8"](num_classes=10)
    context = DistillContext(argparse.Namespace(**options), student, teacher, [], [], torch.arange(10),
                             torch.device("cpu"))
    return METHODS["ctkd"](context).double()


# ---------------------------------------------------------------- gradient reversal
def test_gradient_reversal_is_identity_forward_and_scales_backward_by_minus_lambda() -> None:
    x = torch.randn(7, dtype=torch.float64, requires_grad=True)
    layer = GradientReversal()
    assert torch.equal(layer(x, 0.7), x)
    weights = torch.randn(7, dtype=torch.float64)

    def outer(v: torch.Tensor) -> torch.Tensor:
        return (torch.sin(v) * weights).sum()

    (grad,) = torch.autograd.grad(outer(layer(x, 0.7)), x)
    numeric = torch.zeros(7, dtype=torch.float64)
    for i in range(7):
        step = torch.zeros(7, dtype=torch.float64)
        step[i] = 1e-6
        numeric[i] = (outer(x.detach() + step) - outer(x.detach() - step)) / 2e-6
    torch.testing.assert_close(grad, -0.7 * numeric, rtol=1e-7, atol=1e-9)
    # lambda = -1 makes the layer a plain identity, which gradcheck accepts
    assert torch.autograd.gradcheck(lambda v: outer(layer(v, -1.0)), (x,))


# ---------------------------------------------------------------- curriculum
def official_cosine_decay(i: float, max_value: float = 0.0, min_value: float = -1.0, num_loops: float = 10) -> float:
    """The official CosineDecay.get_value (train_student.py), defaults of scripts/run_cifar_distill.sh."""
    i = min(max(i, 0), num_loops)
    return (math.cos(i * math.pi / num_loops) + 1.0) * 0.5 * (max_value - min_value) + min_value


@pytest.mark.parametrize("epoch", [0, 1, 2, 3, 5, 9, 10, 11, 240])
def test_curriculum_matches_official_schedule(epoch: int) -> None:
    expected = 0.5 * (1.0 - math.cos(math.pi * min(epoch, 10) / 10))
    assert curriculum_lambda(epoch, 0.0, 1.0, 10) == pytest.approx(expected, abs=1e-15)
    assert curriculum_lambda(epoch, 0.0, 1.0, 10) == pytest.approx(-official_cosine_decay(epoch), abs=1e-15)


def test_curriculum_equals_logged_official_values_and_general_range() -> None:
    # 'decay_value' of epochs 1-4 in the logit-standardization repo's CTKD log (resnet32x4 -> resnet8x4)
    logged = [-0.02447174185242318, -0.09549150281252627, -0.20610737385376343, -0.3454915028125263]
    for epoch, value in enumerate(logged, start=1):
        assert curriculum_lambda(epoch, 0.0, 1.0, 10) == pytest.approx(-value, abs=1e-15)
    assert curriculum_lambda(3, 0.2, 0.6, 4) == pytest.approx(0.2 + 0.4 * (1 - math.cos(0.75 * math.pi)) / 2)
    assert curriculum_lambda(7, 0.2, 0.6, 0) == 0.6


# ---------------------------------------------------------------- temperature
def test_temperature_mapping_and_range() -> None:
    method = build_method().requires_grad_(False)
    assert float(method.temperature()) == pytest.approx(1.0 + 20.0 / (1.0 + math.exp(-1.0)), abs=1e-12)
    with torch.no_grad():
        for theta, expected in ((-60.0, 1.0), (60.0, 21.0), (0.0, 11.0)):
            method.temperature_module.global_T.fill_(theta)
            assert float(method.temperature()) == pytest.approx(expected, abs=1e-12)
    assert method.temperature().shape == ()
    assert method.epoch_scalars() == {"temperature": pytest.approx(11.0)}
    other = build_method(t_start=2.0, t_end=3.0).requires_grad_(False)
    assert float(other.temperature()) == pytest.approx(2.0 + 3.0 / (1.0 + math.exp(-1.0)), abs=1e-12)


@pytest.mark.parametrize("standardize", [False, True])
def test_loss_matches_float64_kd_at_learned_temperature_and_reverses_its_gradient(standardize: bool) -> None:
    method = build_method(logit_stand=standardize)
    with torch.no_grad():
        method.temperature_module.global_T.fill_(-0.4)
    rng = np.random.default_rng(3)
    y_s, y_t = rng.standard_normal((6, 10)), 3 * rng.standard_normal((6, 10))
    student = torch.tensor(y_s, requires_grad=True)
    progress = Progress(epoch=3, epochs=240, step=0, steps=10)
    features = Features([], [], student, torch.tensor(y_t), torch.zeros(6, dtype=torch.long),
                        torch.arange(6), progress)
    value = method.loss(features)
    temperature = 1.0 + 20.0 / (1.0 + math.exp(0.4))
    assert value.item() == pytest.approx(kd_reference(y_s, y_t, temperature, standardize), rel=TOL)
    value.backward()
    # the student gets the plain KD gradient, the temperature parameter the reversed one
    theta = -0.4
    step = 1e-6

    def at(theta_value: float) -> float:
        return kd_reference(y_s, y_t, 1.0 + 20.0 / (1.0 + math.exp(-theta_value)), standardize)

    numeric_theta = (at(theta + step) - at(theta - step)) / (2 * step)
    strength = curriculum_lambda(3, 0.0, 1.0, 10)
    assert method.temperature_module.global_T.grad.item() == pytest.approx(-strength * numeric_theta, rel=1e-5)
    numeric_student = np.zeros_like(y_s)
    for position in np.ndindex(y_s.shape):
        plus, minus = y_s.copy(), y_s.copy()
        plus[position] += step
        minus[position] -= step
        numeric_student[position] = (kd_reference(plus, y_t, temperature, standardize)
                                     - kd_reference(minus, y_t, temperature, standardize)) / (2 * step)
    np.testing.assert_allclose(student.grad.numpy(), numeric_student, atol=1e-6)


def test_standardized_loss_uses_the_shared_normalize() -> None:
    method = build_method(logit_stand=True)
    y_s, y_t = torch.randn(4, 10, dtype=torch.float64), torch.randn(4, 10, dtype=torch.float64)
    features = Features([], [], y_s, y_t, torch.zeros(4, dtype=torch.long), torch.arange(4))
    scaled = Features([], [], 5 * y_s + 2, 0.5 * y_t - 1, torch.zeros(4, dtype=torch.long), torch.arange(4))
    torch.testing.assert_close(method.loss(features), method.loss(scaled))  # invariant to logit scale and shift
    torch.testing.assert_close(normalize(5 * y_s + 2), normalize(y_s))


# ---------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_published_teacher(tmp_path_factory.mktemp("teacher_save"), "resnet8")


def student_argv(teacher: Path, data: Path, save: Path, epochs: int, *extra: str) -> list[str]:
    return ["--path_t", str(teacher), "--distill", "ctkd", "--model_s", "resnet8", "--epochs", str(epochs),
            "--lr_decay_epochs", "1", "--data_folder", str(data), "--save_folder", str(save),
            "--device", "cpu", "--no_progress", "--print_freq", "5", "--seed", "3", "--lambda_epochs", "2", *extra]


@pytest.mark.slow
def test_resume_restores_the_learned_temperature_exactly(teacher: Path, cifar_folder: Path, tmp_path: Path) -> None:
    straight, resumed = train_straight_and_resumed(
        lambda save, *rest: student_argv(teacher, cifar_folder, save, *rest), tmp_path)
    assert_same_run(straight, resumed)  # weights, the learned temperature, metrics
    state = torch.load(straight / "resnet8_last.pth", weights_only=True)
    assert list(state["task"]["method"]) == ["temperature_module.global_T"]
    theta = state["task"]["method"]["temperature_module.global_T"]
    assert not torch.equal(theta, torch.ones(1))  # the temperature did move
    rows = metrics_rows(straight)
    assert [row["epoch"] for row in rows] == ["1", "2"] and "ctkd" in rows[0]
    assert float(rows[-1]["temperature"]) == pytest.approx(1.0 + 20.0 * torch.sigmoid(theta).item(), rel=1e-5)


def test_default_weights_and_resnet32x4_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    teacher = write_published_teacher(tmp_path / "save", "resnet32x4")
    opt = train_student.parse_args(["--path_t", str(teacher.relative_to(tmp_path)), "--distill", "ctkd",
                                    "--model_s", "resnet8x4", "--trial", "1"])
    assert (opt.model_t, opt.gamma, opt.alpha, opt.beta) == ("resnet32x4", 0.1, 0.0, 0.9)
    assert (opt.t_start, opt.t_end, opt.lambda_min, opt.lambda_max, opt.lambda_epochs) == (1.0, 20.0, 0.0, 1.0, 10)
    assert train_student.run_name(opt) == "ctkd_cifar100_S_resnet8x4_T_resnet32x4_r_0.1_a_0_b_0.9_trial_1"
    method = METHODS["ctkd"]
    assert method.display_name == "CTKD" and not method.uses_features


def test_bad_lambda_range_is_a_user_error() -> None:
    from helper.errors import UserError

    with pytest.raises(UserError, match="--lambda_min"):
        build_method(lambda_min=2.0, lambda_max=1.0)
