"""TTM (Zheng & Yang, ICLR 2024): the loss against a float64 formula and the official power form,
its relation to WTTM and KD, gradients, float32 stability and the command-line defaults."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training import student as train_student
from distiller_zoo import METHODS, TTM, WTTM, DistillKL
from helpers import softmax, write_published_teacher


def ttm_reference(y_s: np.ndarray, y_t: np.ndarray, exponent: float) -> float:
    """mean_i KL(q_i || p_s,i), q_i = p_t,i^l / sum_c p_t,i,c^l."""
    total = 0.0
    for s_row, t_row in zip(y_s, y_t):
        powered = softmax(t_row) ** exponent
        target = powered / powered.sum()
        total += (target * np.log(target / softmax(s_row))).sum()
    return total / len(y_s)


def logits(seed: int = 0, batch: int = 6, classes: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return 2 * rng.standard_normal((batch, classes)), 4 * rng.standard_normal((batch, classes))


@pytest.mark.parametrize("exponent", [0.1, 0.25, 1.0, 1.5])
def test_ttm_matches_float64_formula(exponent: float) -> None:
    y_s, y_t = logits()
    value = TTM(exponent)(torch.tensor(y_s), torch.tensor(y_t))
    assert value.dtype == torch.float64
    assert value.item() == pytest.approx(ttm_reference(y_s, y_t, exponent), rel=1e-10)


def test_matches_the_official_power_form_in_float32() -> None:
    y_s, y_t = (torch.tensor(z, dtype=torch.float32) for z in logits(seed=1))
    powered = torch.softmax(y_t, dim=1) ** 0.1
    kl = torch.nn.functional.kl_div(torch.log_softmax(y_s, dim=1), powered / powered.sum(dim=1, keepdim=True),
                                    reduction="none").sum(dim=1)
    assert TTM(0.1)(y_s, y_t).item() == pytest.approx(kl.mean().item(), rel=1e-5)


def test_ttm_is_wttm_without_the_sample_weights() -> None:
    """Per sample, WTTM = U * TTM with U = sum_c p_t,c^l; l = 1/T gives KL(softmax(y_t/T) || softmax(y_s))."""
    y_s, y_t = (torch.tensor(z) for z in logits(seed=2))
    for i in range(len(y_s)):
        s, t = y_s[i:i + 1], y_t[i:i + 1]
        weight = (torch.softmax(t, dim=1) ** 0.25).sum()
        assert WTTM(0.25)(s, t).item() == pytest.approx(weight.item() * TTM(0.25)(s, t).item(), rel=1e-12)
    tempered = torch.nn.functional.kl_div(torch.log_softmax(y_s, dim=1), torch.softmax(y_t / 4.0, dim=1),
                                          reduction="batchmean")
    assert TTM(0.25)(y_s, y_t).item() == pytest.approx(tempered.item(), rel=1e-12)
    assert TTM(1.0)(y_s, y_t).item() == pytest.approx(DistillKL(1.0)(y_s, y_t).item(), rel=1e-12)


def test_ttm_gradient_float64() -> None:
    y_s, y_t = (torch.tensor(z) for z in logits(seed=4, batch=4, classes=5))
    y_s.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: TTM(0.1)(s, y_t), (y_s,))


def test_confident_teacher_stays_finite_in_float32() -> None:
    y_t = torch.full((2, 100), -400.0)
    y_t[:, 0] = 400.0
    value = TTM(0.1)(torch.zeros(2, 100), y_t)
    assert torch.isfinite(value) and value.item() == pytest.approx(np.log(100), rel=1e-5)


def test_command_line_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    teacher = write_published_teacher(tmp_path / "save", "vgg13")
    opt = train_student.parse_args(["--path_t", str(teacher.relative_to(tmp_path)), "--distill", "ttm",
                                    "--model_s", "vgg8", "--trial", "1"])
    assert (opt.gamma, opt.alpha, opt.beta, opt.ttm_l) == (1.0, 0.0, 45.0, 0.1)
    assert train_student.run_name(opt) == "ttm_cifar100_S_vgg8_T_vgg13_r_1_a_0_b_45_trial_1"
    assert METHODS["ttm"].label() == "TTM" and not METHODS["ttm"].uses_features
