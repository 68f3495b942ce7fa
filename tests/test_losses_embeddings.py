"""Logit / vector losses (KD, SP, CC, RKD, PKT) against float64 NumPy re-derivations.

References are explicit loops written from the papers and the official code; their gradients are
central finite differences.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distiller_zoo import PKT, Correlation, DistillKL, RKDLoss, Similarity
from helpers import kd_reference, numeric_gradient, torch_value_and_grad

TOL = 1e-5




def random(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


# ---------------------------------------------------------------- KD
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_matches_reference(temperature) -> None:
    y_s, y_t = random(5, 7, seed=1), 3 * random(5, 7, seed=2)
    value, grad = torch_value_and_grad(DistillKL(temperature), y_s, torch.tensor(y_t))
    assert value == pytest.approx(kd_reference(y_s, y_t, temperature), abs=TOL)
    numeric = numeric_gradient(lambda s: kd_reference(s, y_t, temperature), y_s)
    np.testing.assert_allclose(grad, numeric, atol=TOL)


def test_kd_zero_for_equal_logits_and_two_class_closed_form() -> None:
    logits = torch.randn(4, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert DistillKL(4)(logits, logits.clone()).item() == pytest.approx(0.0, abs=1e-12)
    temperature, a, b = 2.0, torch.tensor([[1.0, -0.5]]), torch.tensor([[0.3, 2.0]])
    q = 1 / (1 + math.exp(-(0.3 - 2.0) / temperature))  # teacher P(class 0)
    p = 1 / (1 + math.exp(-(1.0 + 0.5) / temperature))  # student P(class 0)
    closed_form = temperature**2 * (q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p)))
    assert DistillKL(temperature)(a, b).item() == pytest.approx(closed_form, rel=1e-5)


def test_kd_gradcheck() -> None:
    y_s = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    y_t = torch.randn(3, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: DistillKL(4.0)(s, y_t), (y_s,))


# ---------------------------------------------------------------- SP
def sp_reference(f_s: np.ndarray, f_t: np.ndarray) -> float:
    batch = f_s.shape[0]
    s, t = f_s.reshape(batch, -1), f_t.reshape(batch, -1)

    def normalized_gram(x):
        gram = np.array([[np.dot(x[i], x[j]) for j in range(batch)] for i in range(batch)])
        return gram / np.linalg.norm(gram, axis=1, keepdims=True)

    return ((normalized_gram(t) - normalized_gram(s)) ** 2).sum() / batch**2


def test_similarity_matches_reference_and_is_zero_for_identical_features() -> None:
    f_s, f_t = random(4, 3, 2, 2, seed=3), random(4, 5, 2, 2, seed=4)
    value, grad = torch_value_and_grad(lambda s, t: Similarity()([s], [t])[0], f_s, torch.tensor(f_t))
    assert value == pytest.approx(sp_reference(f_s, f_t), abs=TOL)
    np.testing.assert_allclose(grad, numeric_gradient(lambda s: sp_reference(s, f_t), f_s), atol=TOL)
    same = torch.randn(4, 6)
    losses = Similarity()([same, same], [same.clone(), 2 * same])  # also invariant to scale
    assert len(losses) == 2 and all(loss.item() == pytest.approx(0.0, abs=1e-10) for loss in losses)


# ---------------------------------------------------------------- CC
def cc_reference(f_s: np.ndarray, f_t: np.ndarray) -> float:
    batch, dims = f_s.shape
    total = 0.0
    for i in range(batch - 1):
        for k in range(dims):
            total += abs(f_s[i, k] - f_t[i, k]) * abs(f_s[i + 1, k] - f_t[i + 1, k])
    return total / (batch - 1)


def test_correlation_matches_reference() -> None:
    f_s, f_t = random(5, 6, seed=5), random(5, 6, seed=6)
    value, grad = torch_value_and_grad(Correlation(), f_s, torch.tensor(f_t))
    assert value == pytest.approx(cc_reference(f_s, f_t), abs=TOL)
    np.testing.assert_allclose(grad, numeric_gradient(lambda s: cc_reference(s, f_t), f_s), atol=TOL)


# ---------------------------------------------------------------- RKD
def smooth_l1(a: float, b: float) -> float:
    difference = abs(a - b)
    return 0.5 * difference**2 if difference < 1 else difference - 0.5


def rkd_reference(f_s: np.ndarray, f_t: np.ndarray, w_d: float = 25, w_a: float = 50) -> float:
    batch = f_s.shape[0]
    s, t = f_s.reshape(batch, -1), f_t.reshape(batch, -1)

    def distances(x):
        d = np.array([[np.linalg.norm(x[i] - x[j]) for j in range(batch)] for i in range(batch)])
        return d / d[~np.eye(batch, dtype=bool)].mean()

    def angles(x):
        out = np.zeros((batch, batch, batch))
        for i in range(batch):
            for j in range(batch):
                for k in range(batch):
                    u, v = x[j] - x[i], x[k] - x[i]
                    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
                    if nu > 0 and nv > 0:
                        out[i, j, k] = np.dot(u, v) / (nu * nv)
        return out

    d_s, d_t, a_s, a_t = distances(s), distances(t), angles(s), angles(t)
    distance_loss = np.mean([smooth_l1(x, y) for x, y in zip(d_s.reshape(-1), d_t.reshape(-1))])
    angle_loss = np.mean([smooth_l1(x, y) for x, y in zip(a_s.reshape(-1), a_t.reshape(-1))])
    return w_d * distance_loss + w_a * angle_loss


def test_rkd_matches_reference() -> None:
    f_s, f_t = random(4, 3, seed=7), 2 * random(4, 5, seed=8)
    value, grad = torch_value_and_grad(RKDLoss(), f_s, torch.tensor(f_t))
    assert value == pytest.approx(rkd_reference(f_s, f_t), abs=TOL)
    np.testing.assert_allclose(grad, numeric_gradient(lambda s: rkd_reference(s, f_t), f_s), atol=TOL)


def test_rkd_zero_for_identical_inputs_and_teacher_gets_no_gradient() -> None:
    features = torch.randn(6, 8, dtype=torch.float64)
    assert RKDLoss()(features, features.clone()).item() == pytest.approx(0.0, abs=1e-10)
    teacher = torch.randn(6, 8, requires_grad=True)
    RKDLoss()(torch.randn(6, 8, requires_grad=True), teacher).backward()
    assert teacher.grad is None


# ---------------------------------------------------------------- PKT
def pkt_reference(f_s: np.ndarray, f_t: np.ndarray, eps: float = 1e-7) -> float:
    def probabilities(x):
        x = x / (np.linalg.norm(x, axis=1, keepdims=True) + eps)
        batch = len(x)
        similarity = np.array([[(np.dot(x[i], x[j]) + 1) / 2 for j in range(batch)] for i in range(batch)])
        return similarity / similarity.sum(axis=1, keepdims=True)

    p_s, p_t = probabilities(f_s), probabilities(f_t)
    return float(np.mean(p_t * np.log((p_t + eps) / (p_s + eps))))


def test_pkt_matches_reference_is_zero_for_identical_features_and_gradchecks() -> None:
    f_s, f_t = random(5, 4, seed=9), random(5, 7, seed=10)
    value, grad = torch_value_and_grad(PKT(), f_s, torch.tensor(f_t))
    assert value == pytest.approx(pkt_reference(f_s, f_t), abs=TOL)
    np.testing.assert_allclose(grad, numeric_gradient(lambda s: pkt_reference(s, f_t), f_s), atol=TOL)
    same = torch.randn(5, 4, dtype=torch.float64)
    assert PKT()(same, same.clone()).item() == pytest.approx(0.0, abs=1e-12)
    student = torch.tensor(f_s, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: PKT()(s, torch.tensor(f_t)), (student,))
