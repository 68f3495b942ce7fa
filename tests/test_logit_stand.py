"""Logit standardization (Sun et al., CVPR 2024): normalize() and kd_loss() against float64
formulas, the affine invariance it buys, and the --logit_stand KD term of the training step."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from training import student as train_student
from distiller_zoo import METHODS, DistillContext, DistillKL, DistillTask, kd_loss, normalize
from helpers import write_published_teacher

TOL = 1e-5


def normalize_reference(z: np.ndarray) -> np.ndarray:
    """(z - mean) / (1e-7 + std) per row, std with Bessel's correction (the official code's torch.std)."""
    return (z - z.mean(axis=1, keepdims=True)) / (1e-7 + z.std(axis=1, ddof=1, keepdims=True))


def kd_reference(z_s: np.ndarray, z_t: np.ndarray, temperature: float, logit_stand: bool) -> float:
    if logit_stand:
        z_s, z_t = normalize_reference(z_s), normalize_reference(z_t)
    total = 0.0
    for s_row, t_row in zip(z_s / temperature, z_t / temperature):
        log_q = s_row - s_row.max() - np.log(np.exp(s_row - s_row.max()).sum())
        log_p = t_row - t_row.max() - np.log(np.exp(t_row - t_row.max()).sum())
        total += (np.exp(log_p) * (log_p - log_q)).sum()
    return temperature**2 * total / len(z_s)


def logits(seed: int = 0, batch: int = 6, classes: int = 9) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return 4 * rng.standard_normal((batch, classes)) + 1, 2 * rng.standard_normal((batch, classes)) - 3


def test_normalize_gives_zero_mean_unit_bessel_std_rows() -> None:
    z_s, _ = logits()
    standardized = normalize(torch.tensor(z_s))
    np.testing.assert_allclose(standardized.numpy(), normalize_reference(z_s), rtol=1e-12)
    np.testing.assert_allclose(standardized.mean(dim=1).numpy(), 0.0, atol=1e-12)
    np.testing.assert_allclose(standardized.std(dim=1).numpy(), 1.0, rtol=1e-6)  # 1e-7 guard in the divisor
    assert standardized.shape == (6, 9)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("logit_stand", [False, True])
def test_kd_loss_matches_float64_reference(temperature: float, logit_stand: bool) -> None:
    z_s, z_t = logits(seed=1)
    value = kd_loss(torch.tensor(z_s), torch.tensor(z_t), temperature, logit_stand)
    assert value.item() == pytest.approx(kd_reference(z_s, z_t, temperature, logit_stand), rel=TOL)


def test_kd_loss_without_standardization_is_distill_kl() -> None:
    z_s, z_t = (torch.tensor(z) for z in logits(seed=2))
    for temperature in (1.0, 4.0):
        assert kd_loss(z_s, z_t, temperature, False).item() == pytest.approx(DistillKL(temperature)(z_s, z_t).item(),
                                                                             rel=1e-12)


def test_standardized_kd_ignores_per_sample_scale_and_shift() -> None:
    z_s, z_t = (torch.tensor(z) for z in logits(seed=3))
    scale = torch.rand(6, 1, dtype=torch.float64) * 10 + 0.1
    shift = torch.randn(6, 1, dtype=torch.float64) * 20
    reference = kd_loss(z_s, z_t, 2.0, True).item()
    assert kd_loss(scale * z_s + shift, z_t, 2.0, True).item() == pytest.approx(reference, rel=TOL)
    assert kd_loss(z_s, scale * z_t + shift, 2.0, True).item() == pytest.approx(reference, rel=TOL)
    # without standardization the same maps change the loss
    assert kd_loss(scale * z_s + shift, z_t, 2.0, False).item() != pytest.approx(
        kd_loss(z_s, z_t, 2.0, False).item(), rel=1e-3)


def test_training_step_standardizes_the_kd_term() -> None:
    torch.manual_seed(0)
    student, teacher = nn.Sequential(nn.Flatten(), nn.Linear(12, 5)), nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    context = DistillContext(argparse.Namespace(), student, teacher, [], [], torch.zeros(0), torch.device("cpu"))
    task = DistillTask(student, teacher, METHODS["kd"](context), 0.1, 9.0, 0.0, 2.0, logit_stand=True)
    images, labels = torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 3])
    output = task.compute(images, labels, torch.arange(4))
    with torch.no_grad():
        expected_kl = kd_loss(student(images), teacher(images), 2.0, True)
    assert output.losses["kl"].item() == pytest.approx(expected_kl.item(), rel=1e-6)
    expected_total = 0.1 * output.losses["ce"] + 9.0 * output.losses["kl"]
    assert output.total.item() == pytest.approx(expected_total.item(), rel=1e-6)


def test_kd_ls_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The official KD+LS CIFAR-100 setting: CE 0.1, KD 9, base temperature 2, standardized logits."""
    monkeypatch.chdir(tmp_path)
    teacher = write_published_teacher(tmp_path / "save", "resnet32x4")
    opt = train_student.parse_args(["--path_t", str(teacher.relative_to(tmp_path)), "--distill", "kd",
                                    "--model_s", "resnet8x4", "-r", "0.1", "-a", "9", "-b", "0", "--kd_T", "2",
                                    "--logit_stand", "--trial", "1"])
    assert (opt.gamma, opt.alpha, opt.beta, opt.kd_T, opt.logit_stand) == (0.1, 9.0, 0.0, 2.0, True)
