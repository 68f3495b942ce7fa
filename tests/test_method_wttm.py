"""WTTM (Zheng & Yang, ICLR 2024): the loss against a float64 formula and the official power form,
the l = 1 and l = 1/T identities, gradients and the command-line defaults."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training import student as train_student
from distiller_zoo import METHODS, WTTM, DistillKL
from helpers import softmax, write_published_teacher

TOL = 1e-5


def wttm_reference(y_s: np.ndarray, y_t: np.ndarray, exponent: float) -> float:
    """mean_i U_i KL(q_i || p_s,i), q_i = p_t,i^l / U_i, U_i = sum_c p_t,i,c^l (paper eq. for WTTM)."""
    total = 0.0
    for s_row, t_row in zip(y_s, y_t):
        powered = softmax(t_row) ** exponent
        power_sum = powered.sum()
        target = powered / power_sum
        total += power_sum * (target * np.log(target / softmax(s_row))).sum()
    return total / len(y_s)


def logits(seed: int = 0, batch: int = 6, classes: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return 2 * rng.standard_normal((batch, classes)), 4 * rng.standard_normal((batch, classes))


@pytest.mark.parametrize("exponent", [0.1, 0.2, 0.5, 1.0, 1.5])
def test_wttm_matches_float64_formula(exponent: float) -> None:
    y_s, y_t = logits()
    value = WTTM(exponent)(torch.tensor(y_s), torch.tensor(y_t))
    assert value.item() == pytest.approx(wttm_reference(y_s, y_t, exponent), rel=TOL)


def test_matches_the_official_power_form_in_float32() -> None:
    """softmax(y_t) ** l normalised by its sum, KL summed over classes, weighted by the sum, batch mean."""
    y_s, y_t = (torch.tensor(z, dtype=torch.float32) for z in logits(seed=1))
    powered = torch.softmax(y_t, dim=1) ** 0.2
    power_sum = powered.sum(dim=1)
    kl = torch.nn.functional.kl_div(torch.log_softmax(y_s, dim=1), powered / power_sum[:, None],
                                    reduction="none").sum(dim=1)
    assert WTTM(0.2)(y_s, y_t).item() == pytest.approx((power_sum * kl).mean().item(), rel=1e-5)


def test_exponent_one_is_plain_kd_at_temperature_one() -> None:
    """l = 1: the transform is the identity and every weight is sum(p_t) = 1."""
    y_s, y_t = (torch.tensor(z) for z in logits(seed=2))
    assert WTTM(1.0)(y_s, y_t).item() == pytest.approx(DistillKL(1.0)(y_s, y_t).item(), rel=1e-12)


def test_power_transform_is_the_teacher_temperature() -> None:
    """p_t^(1/T) / sum = softmax(y_t / T): WTTM = mean_i U_i KL(softmax(y_t / T) || softmax(y_s))."""
    y_s, y_t = (torch.tensor(z) for z in logits(seed=3))
    temperature = 4.0
    power_sum = (torch.softmax(y_t, dim=1) ** (1 / temperature)).sum(dim=1)
    kl = torch.nn.functional.kl_div(torch.log_softmax(y_s, dim=1), torch.softmax(y_t / temperature, dim=1),
                                    reduction="none").sum(dim=1)
    assert WTTM(1 / temperature)(y_s, y_t).item() == pytest.approx((power_sum * kl).mean().item(), rel=1e-12)


def test_wttm_gradient_float64() -> None:
    y_s, y_t = (torch.tensor(z) for z in logits(seed=4, batch=4, classes=5))
    y_s.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: WTTM(0.2)(s, y_t), (y_s,))


def test_confident_teacher_stays_finite_in_float32() -> None:
    y_s = torch.zeros(2, 100)
    y_t = torch.full((2, 100), -400.0)
    y_t[:, 0] = 400.0
    value = WTTM(0.2)(y_s, y_t)
    assert torch.isfinite(value) and value.item() == pytest.approx(np.log(100), rel=1e-5)


def test_command_line_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    teacher = write_published_teacher(tmp_path / "save", "resnet32x4")
    opt = train_student.parse_args(["--path_t", str(teacher.relative_to(tmp_path)), "--distill", "wttm",
                                    "--model_s", "resnet8x4", "--trial", "1"])
    assert (opt.gamma, opt.alpha, opt.beta, opt.wttm_l) == (1.0, 0.0, 4.0, 0.2)
    assert train_student.run_name(opt) == "wttm_cifar100_S_resnet8x4_T_resnet32x4_r_1_a_0_b_4_trial_1"
    assert METHODS["wttm"].label() == "WTTM" and not METHODS["wttm"].uses_features
