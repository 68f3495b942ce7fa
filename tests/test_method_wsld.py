"""WSLD (Zhou et al., ICLR 2021): WSLDLoss against a float64 loop, the sample weights, where the
gradient goes, the temperature option and the command-line defaults."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from training import student as train_student
from distiller_zoo import METHODS, WSLDLoss
from distiller_zoo.wsld import wsld_sample_weights
from helpers import write_published_teacher

TOL = 1e-5


def log_softmax(row: np.ndarray) -> np.ndarray:
    shifted = row - row.max()
    return shifted - np.log(np.exp(shifted).sum())


def wsld_reference(fc_t: np.ndarray, fc_s: np.ndarray, label: np.ndarray, temperature: float) -> float:
    hard, soft = 0.0, 0.0
    for t_row, s_row, y in zip(fc_t, fc_s, label):
        ce_student, ce_teacher = -log_softmax(s_row)[y], -log_softmax(t_row)[y]
        weight = 1 - np.exp(-max(ce_student / (ce_teacher + 1e-7), 0.0))
        soft_label = np.exp(log_softmax(t_row / temperature))
        soft += weight * -(soft_label * log_softmax(s_row / temperature)).sum()
        hard += ce_student
    batch = len(label)
    return hard / batch + 2.5 * temperature**2 * soft / batch


def batch(seed: int = 0, size: int = 7, classes: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return 3 * rng.standard_normal((size, classes)), 2 * rng.standard_normal((size, classes)), \
        rng.integers(0, classes, size=size)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_wsld_matches_float64_loop(temperature: float) -> None:
    fc_t, fc_s, label = batch()
    loss = WSLDLoss(SimpleNamespace(wsld_T=temperature))
    value = loss(torch.tensor(fc_t), torch.tensor(fc_s), torch.tensor(label))
    assert value.item() == pytest.approx(wsld_reference(fc_t, fc_s, label, temperature), rel=TOL)


def test_temperature_option_falls_back_to_nce_t() -> None:
    assert WSLDLoss(SimpleNamespace(wsld_T=3.0, nce_t=0.07)).T == 3.0
    assert WSLDLoss(SimpleNamespace(nce_t=2.0)).T == 2.0
    assert WSLDLoss(SimpleNamespace(nce_t=2.0)).alpha == 2.5


def test_weights_lie_in_zero_one() -> None:
    fc_t, fc_s, label = (torch.tensor(a) for a in batch(seed=1, size=64, classes=10))
    weights = wsld_sample_weights(fc_t, fc_s, label)
    assert weights.shape == (64, 1) and not weights.requires_grad
    assert (weights >= 0).all() and (weights <= 1).all()  # exp(-ratio) rounds to 0 for a very sure teacher
    mild = wsld_sample_weights(fc_t / 4, fc_s / 4, label)
    assert (mild >= 0).all() and (mild < 1).all()
    # a student that fits the label as well as the teacher gets 1 - 1/e; one that fits it perfectly gets 0
    same = wsld_sample_weights(fc_t, fc_t, label).flatten().tolist()
    assert same == pytest.approx([1 - np.exp(-1)] * 64, rel=1e-4)  # the 1e-7 guard shows for a tiny teacher CE
    perfect = torch.full((2, 3), -1e4, dtype=torch.float64)
    perfect[:, 0] = 1e4
    assert wsld_sample_weights(fc_t[:2, :3], perfect, torch.tensor([0, 0])).flatten().tolist() == [0.0, 0.0]


def test_gradient_flows_only_through_the_student() -> None:
    """d loss / d fc_s with the weights held fixed; the teacher logits get no gradient."""
    fc_t_np, fc_s_np, label_np = batch(seed=2)
    temperature = 2.0
    fc_t = torch.tensor(fc_t_np, requires_grad=True)
    fc_s = torch.tensor(fc_s_np, requires_grad=True)
    WSLDLoss(SimpleNamespace(wsld_T=temperature))(fc_t, fc_s, torch.tensor(label_np)).backward()
    assert fc_t.grad is None
    size = len(label_np)
    expected = np.zeros_like(fc_s_np)
    for i, (t_row, s_row, y) in enumerate(zip(fc_t_np, fc_s_np, label_np)):
        weight = 1 - np.exp(-(-log_softmax(s_row)[y]) / (-log_softmax(t_row)[y] + 1e-7))
        one_hot = np.eye(len(s_row))[y]
        expected[i] = (np.exp(log_softmax(s_row)) - one_hot) / size
        soft_label = np.exp(log_softmax(t_row / temperature))
        expected[i] += 2.5 * temperature**2 * weight * (np.exp(log_softmax(s_row / temperature)) - soft_label) \
            / temperature / size
    np.testing.assert_allclose(fc_s.grad.numpy(), expected, rtol=1e-9, atol=1e-12)


def test_command_line_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    teacher = write_published_teacher(tmp_path / "save", "resnet32x4")
    opt = train_student.parse_args(["--path_t", str(teacher.relative_to(tmp_path)), "--distill", "wsld",
                                    "--model_s", "resnet8x4", "--trial", "1"])
    assert (opt.gamma, opt.alpha, opt.beta, opt.wsld_T) == (0.0, 0.0, 1.0, 2.0)
    assert train_student.run_name(opt) == "wsld_cifar100_S_resnet8x4_T_resnet32x4_r_0_a_0_b_1_trial_1"
    assert METHODS["wsld"].label() == "WSLD" and not METHODS["wsld"].uses_features
