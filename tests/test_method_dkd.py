"""DKD (Zhao et al., CVPR 2022): dkd_loss against a float64 re-derivation, the KD = TCKD +
(1 - p_t) NCKD identity, gradients, the warm-up schedule, --logit_stand and exact resume."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from training import student as train_student
from distiller_zoo import METHODS, DistillContext, DistillKL, Features, dkd_loss, dkd_per_sample, normalize
from distiller_zoo.base import warmup_factor
from helper.loop import Progress
from helpers import assert_same_run, metrics_rows, softmax, train_straight_and_resumed, write_published_teacher

TOL = 1e-5


def dkd_reference(student: np.ndarray, teacher: np.ndarray, target: np.ndarray, alpha: float, beta: float,
                  temperature: float) -> float:
    """Paper eq. 7 written out per sample: binary KL on [p_t, 1 - p_t] plus KL among the other classes."""
    total = 0.0
    for s_row, t_row, label in zip(student, teacher, target):
        p_s, p_t = softmax(s_row / temperature), softmax(t_row / temperature)
        b_s, b_t = np.array([p_s[label], 1 - p_s[label]]), np.array([p_t[label], 1 - p_t[label]])
        tckd = (b_t * np.log(b_t / b_s)).sum()
        others = [c for c in range(len(s_row)) if c != label]
        q_s, q_t = softmax(s_row[others] / temperature), softmax(t_row[others] / temperature)
        nckd = (q_t * np.log(q_t / q_s)).sum()
        total += temperature**2 * (alpha * tckd + beta * nckd)
    return total / len(student)


def random_batch(batch: int = 6, classes: int = 7, seed: int = 0, scale: float = 3.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.standard_normal((batch, classes)), scale * rng.standard_normal((batch, classes)),
            rng.integers(0, classes, size=batch))


@pytest.mark.parametrize("alpha,beta,temperature", [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0), (9.0, 72.0, 2.0)])
def test_dkd_loss_matches_float64_reference(alpha: float, beta: float, temperature: float) -> None:
    student, teacher, target = random_batch()
    value = dkd_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(target), alpha, beta, temperature)
    assert value.dtype == torch.float64
    assert value.item() == pytest.approx(dkd_reference(student, teacher, target, alpha, beta, temperature), rel=TOL)
    value32 = dkd_loss(torch.tensor(student).float(), torch.tensor(teacher).float(), torch.tensor(target), alpha,
                       beta, temperature)
    assert value32.item() == pytest.approx(value.item(), rel=1e-4)


def test_per_sample_values_match_the_reference_row_by_row() -> None:
    student, teacher, target = random_batch(seed=2)
    values = dkd_per_sample(torch.tensor(student), torch.tensor(teacher), torch.tensor(target), 1.0, 8.0, 4.0)
    expected = [dkd_reference(s[None], t[None], y[None], 1.0, 8.0, 4.0) for s, t, y in zip(student, teacher, target)]
    assert values.tolist() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_is_tckd_plus_teacher_non_target_mass_times_nckd(temperature: float) -> None:
    """Per sample, T^2 KL = T^2 TCKD + (1 - p_t^teacher) T^2 NCKD, p_t at temperature T (eq. 7)."""
    student, teacher, target = (torch.tensor(a) for a in random_batch(batch=5, classes=10, seed=3))
    kd = DistillKL(temperature)
    for i in range(5):
        s, t, y = student[i:i + 1], teacher[i:i + 1], target[i:i + 1]
        p_target = torch.softmax(t / temperature, dim=1)[0, y].item()
        decoupled = dkd_loss(s, t, y, alpha=1.0, beta=1.0 - p_target, temperature=temperature)
        assert decoupled.item() == pytest.approx(kd(s, t).item(), rel=1e-10)
    # over a batch the same holds with the per-sample weights averaged into NCKD's sum
    weights = 1.0 - torch.softmax(teacher / temperature, dim=1).gather(1, target[:, None]).squeeze(1)
    per_sample_nckd = torch.stack([dkd_loss(student[i:i + 1], teacher[i:i + 1], target[i:i + 1], 0.0, 1.0,
                                            temperature) for i in range(5)])
    tckd = dkd_loss(student, teacher, target, 1.0, 0.0, temperature)
    assert (tckd + (weights * per_sample_nckd).mean()).item() == pytest.approx(kd(student, teacher).item(), rel=1e-10)


def test_dkd_gradient_float64() -> None:
    student, teacher, target = (torch.tensor(a) for a in random_batch(batch=4, classes=5, seed=1, scale=1.5))
    student.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: dkd_loss(s, teacher, target, 1.0, 8.0, 4.0), (student,))


def dkd_method(**flags) -> torch.nn.Module:
    values = dict(dkd_alpha=1.0, dkd_beta=8.0, dkd_T=4.0, dkd_warmup=20, logit_stand=False)
    values.update(flags)
    context = DistillContext(argparse.Namespace(**values), None, None, [], [], torch.zeros(0), torch.device("cpu"))
    return METHODS["dkd"](context)


def features(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, epoch: int) -> Features:
    return Features([], [], student, teacher, target, torch.arange(len(target)), Progress(epoch, 240, 0, 10))


def test_warmup_weight_per_epoch() -> None:
    assert [warmup_factor(epoch, 20) for epoch in (1, 2, 10, 19, 20, 21, 240)] == [0.05, 0.1, 0.5, 0.95, 1.0, 1.0,
                                                                                   1.0]
    assert warmup_factor(1, 0) == 1.0
    student, teacher, target = (torch.tensor(a) for a in random_batch())
    full = dkd_loss(student, teacher, target, 1.0, 8.0, 4.0)
    method = dkd_method()
    for epoch in (1, 5, 20, 30):
        value = method.loss(features(student, teacher, target, epoch))
        assert value.item() == pytest.approx(min(epoch / 20, 1.0) * full.item(), rel=1e-12)


def test_logit_stand_standardizes_both_logits_first() -> None:
    student, teacher, target = (torch.tensor(a) for a in random_batch())
    method = dkd_method(logit_stand=True, dkd_T=2.0, dkd_alpha=9.0, dkd_beta=72.0, dkd_warmup=0)
    value = method.loss(features(student, teacher, target, 1))
    expected = dkd_loss(normalize(student), normalize(teacher), target, 9.0, 72.0, 2.0)
    assert value.item() == pytest.approx(expected.item(), rel=1e-12)
    # per-sample positive scales and shifts of the logits change nothing (up to normalize's 1e-7)
    scale, shift = torch.rand(6, 1, dtype=torch.float64) * 5 + 0.5, torch.randn(6, 1, dtype=torch.float64) * 10
    moved = method.loss(features(scale * student + shift, teacher * 3 - 1, target, 1))
    assert moved.item() == pytest.approx(value.item(), rel=1e-5)


def test_command_line_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    teacher = write_published_teacher(tmp_path / "save", "resnet32x4")
    opt = train_student.parse_args(["--path_t", str(teacher.relative_to(tmp_path)), "--distill", "dkd",
                                    "--model_s", "resnet8x4", "--trial", "1"])
    assert (opt.gamma, opt.alpha, opt.beta) == (1.0, 0.0, 1.0)
    assert (opt.dkd_alpha, opt.dkd_beta, opt.dkd_T, opt.dkd_warmup, opt.logit_stand) == (1.0, 8.0, 4.0, 20, False)
    assert train_student.run_name(opt) == "dkd_cifar100_S_resnet8x4_T_resnet32x4_r_1_a_0_b_1_trial_1"
    assert METHODS["dkd"].label() == "DKD" and not METHODS["dkd"].uses_features


# ---------------------------------------------------------------- exact resume through the warm-up
def dkd_argv(teacher: Path, data: Path, save: Path, epochs: int, *extra: str) -> list[str]:
    return ["--path_t", str(teacher), "--distill", "dkd", "--model_s", "resnet8", "--epochs", str(epochs),
            "--dkd_warmup", "2", "--batch_size", "64", "--data_folder", str(data), "--save_folder", str(save),
            "--device", "cpu", "--no_progress", "--seed", "5", *extra]


@pytest.mark.slow
def test_resume_through_warmup_is_bit_identical(cifar_folder: Path, tmp_path: Path) -> None:
    teacher = write_published_teacher(tmp_path / "teacher", "resnet8")
    straight, resumed = train_straight_and_resumed(
        lambda save, *rest: dkd_argv(teacher, cifar_folder, save, *rest), tmp_path)
    assert_same_run(straight, resumed)
    states = [torch.load(run / "resnet8_last.pth", weights_only=True) for run in (straight, resumed)]
    assert states[0]["epoch"] == states[1]["epoch"] == 2
    assert float(metrics_rows(straight)[1]["dkd"]) > 0
