"""DIST (Huang et al., NeurIPS 2022): the loss against a float64 Pearson formula, the invariances of
the relation terms, gradients and the command-line defaults."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training import student as train_student
from distiller_zoo import DIST, METHODS, inter_class_relation, intra_class_relation
from helpers import write_published_teacher

TOL = 1e-5


def softmax_rows(z: np.ndarray) -> np.ndarray:
    shifted = np.exp(z - z.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """cov(a, b) / (std(a) std(b)) from explicit means and (population) standard deviations."""
    mean_a, mean_b = a.mean(), b.mean()
    covariance = ((a - mean_a) * (b - mean_b)).mean()
    return covariance / (np.sqrt(((a - mean_a) ** 2).mean()) * np.sqrt(((b - mean_b) ** 2).mean()))


def dist_reference(z_s: np.ndarray, z_t: np.ndarray, beta: float, gamma: float, tau: float) -> float:
    y_s, y_t = softmax_rows(z_s / tau), softmax_rows(z_t / tau)
    inter = 1 - np.mean([pearson(y_s[i], y_t[i]) for i in range(y_s.shape[0])])
    intra = 1 - np.mean([pearson(y_s[:, c], y_t[:, c]) for c in range(y_s.shape[1])])
    return tau**2 * (beta * inter + gamma * intra)


def logits(batch: int = 8, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return 3 * rng.standard_normal((batch, classes)), 3 * rng.standard_normal((batch, classes))


@pytest.mark.parametrize("beta,gamma,tau", [(1.0, 1.0, 4.0), (1.0, 1.0, 1.0), (2.0, 0.5, 2.0)])
def test_dist_matches_float64_pearson_formula(beta: float, gamma: float, tau: float) -> None:
    z_s, z_t = logits()
    value = DIST(beta, gamma, tau)(torch.tensor(z_s), torch.tensor(z_t))
    assert value.item() == pytest.approx(dist_reference(z_s, z_t, beta, gamma, tau), rel=TOL)
    value32 = DIST(beta, gamma, tau)(torch.tensor(z_s).float(), torch.tensor(z_t).float())
    assert value32.item() == pytest.approx(value.item(), rel=1e-4)


def test_official_class_defaults_and_identical_inputs() -> None:
    module = DIST()
    assert (module.beta, module.gamma, module.tau) == (1.0, 1.0, 1.0)
    z = torch.tensor(logits()[0])
    assert DIST(tau=4.0)(z, z).item() == pytest.approx(0.0, abs=1e-4)  # the 1e-8 guard leaves ~1e-5


def test_relations_are_invariant_to_positive_affine_maps() -> None:
    """Pearson correlation ignores a positive scale and a shift of each compared vector: per row
    (sample) for the inter-class relation, per column (class) for the intra-class relation."""
    z_s, z_t = (torch.tensor(z) for z in logits(seed=4))
    y_s, y_t = z_s.softmax(1), z_t.softmax(1)
    row_scale, row_shift = torch.rand(8, 1, dtype=torch.float64) * 4 + 0.25, torch.randn(8, 1, dtype=torch.float64)
    inter = inter_class_relation(y_s, y_t)
    assert inter_class_relation(row_scale * y_s + row_shift, y_t).item() == pytest.approx(inter.item(), rel=1e-6)
    assert inter_class_relation(y_s, row_scale * y_t + row_shift).item() == pytest.approx(inter.item(), rel=1e-6)
    column_scale = torch.rand(1, 10, dtype=torch.float64) * 4 + 0.25
    column_shift = torch.randn(1, 10, dtype=torch.float64)
    intra = intra_class_relation(y_s, y_t)
    assert intra_class_relation(column_scale * y_s + column_shift, y_t).item() == pytest.approx(intra.item(),
                                                                                                rel=1e-6)
    # a negative scale flips every correlation: 1 - r becomes 1 + r
    assert inter_class_relation(-y_s, y_t).item() == pytest.approx(2 - inter.item(), rel=1e-6)


def test_dist_gradient_float64() -> None:
    z_s, z_t = (torch.tensor(z) for z in logits(batch=4, classes=5, seed=2))
    z_s.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: DIST(1.0, 1.0, 4.0)(s, z_t), (z_s,))


def test_command_line_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    teacher = write_published_teacher(tmp_path / "save", "resnet32x4")
    opt = train_student.parse_args(["--path_t", str(teacher.relative_to(tmp_path)), "--distill", "dist",
                                    "--model_s", "resnet8x4", "--trial", "1"])
    assert (opt.gamma, opt.alpha, opt.beta) == (1.0, 0.0, 2.0)
    assert (opt.dist_beta, opt.dist_gamma, opt.dist_tau) == (1.0, 1.0, 4.0)
    assert train_student.run_name(opt) == "dist_cifar100_S_resnet8x4_T_resnet32x4_r_1_a_0_b_2_trial_1"
    assert METHODS["dist"].label() == "DIST" and not METHODS["dist"].uses_features
