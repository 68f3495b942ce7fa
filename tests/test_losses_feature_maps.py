"""Feature-map losses (AT, FT, NST, FSP, VID, AB, FitNet hint) against float64 NumPy re-derivations.

Every reference below is written from the papers and the official code with explicit loops; gradients
of the references are central finite differences, so nothing here re-uses the code under test.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distiller_zoo import ABLoss, Attention, FactorTransfer, FSP, HintLoss, NSTLoss, VIDLoss
from helpers import adaptive_pool, numeric_gradient, torch_value_and_grad

TOL = 1e-5


def pool_larger(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if a.shape[2] > b.shape[2]:
        return adaptive_pool(a, *b.shape[2:]), b
    if a.shape[2] < b.shape[2]:
        return a, adaptive_pool(b, *a.shape[2:])
    return a, b


def random(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed + sum(shape)).standard_normal(shape)


# ---------------------------------------------------------------- attention transfer
def at_reference(f_s: np.ndarray, f_t: np.ndarray, p: int = 2) -> float:
    f_s, f_t = pool_larger(f_s, f_t)
    total = 0.0
    batch = f_s.shape[0]
    for b in range(batch):
        a_s = (f_s[b] ** p).mean(axis=0).reshape(-1)
        a_t = (f_t[b] ** p).mean(axis=0).reshape(-1)
        a_s = a_s / max(np.sqrt((a_s**2).sum()), 1e-12)
        a_t = a_t / max(np.sqrt((a_t**2).sum()), 1e-12)
        total += ((a_s - a_t) ** 2).sum()
    return total / (batch * a_s.size)


@pytest.mark.parametrize(
    "s_shape,t_shape",
    [((3, 4, 4, 4), (3, 6, 4, 4)), ((3, 4, 8, 8), (3, 5, 4, 4)), ((3, 4, 4, 4), (3, 2, 7, 7))],
)
def test_attention_matches_reference_and_pools_the_larger_map(s_shape, t_shape) -> None:
    f_s, f_t = random(*s_shape), random(*t_shape, seed=1)
    teacher = torch.tensor(f_t)
    value, grad = torch_value_and_grad(lambda s, t: Attention()([s], [t])[0], f_s, teacher)
    assert value == pytest.approx(at_reference(f_s, f_t), abs=TOL)
    np.testing.assert_allclose(grad, numeric_gradient(lambda s: at_reference(s, f_t), f_s), atol=TOL)


def test_attention_returns_one_loss_per_layer_and_is_scale_invariant() -> None:
    g_s = [torch.randn(2, 3, 8, 8), torch.randn(2, 5, 4, 4)]
    g_t = [torch.randn(2, 6, 8, 8), torch.randn(2, 7, 2, 2)]
    losses = Attention()(g_s, g_t)
    assert len(losses) == 2 and all(loss.dim() == 0 for loss in losses)
    scaled = Attention()([3.7 * f for f in g_s], [3.7 * f for f in g_t])
    for plain, rescaled in zip(losses, scaled):
        assert rescaled.item() == pytest.approx(plain.item(), rel=1e-5)
    assert Attention()([g_s[0]], [g_s[0].clone()])[0].item() == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------- factor transfer
def ft_reference(f_s: np.ndarray, f_t: np.ndarray, p1: int, p2: int) -> float:
    f_s, f_t = pool_larger(f_s, f_t)
    batch = f_s.shape[0]
    total, count = 0.0, 0
    for b in range(batch):
        n_s = (f_s[b] ** p1).mean(axis=0).reshape(-1)
        n_t = (f_t[b] ** p1).mean(axis=0).reshape(-1)
        n_s = n_s / np.sqrt((n_s**2).sum())
        n_t = n_t / np.sqrt((n_t**2).sum())
        total += (np.abs(n_s - n_t) ** p2).sum()
        count += n_s.size
    return total / count


@pytest.mark.parametrize("p2", [1, 2])
@pytest.mark.parametrize("s_shape,t_shape", [((2, 3, 4, 4), (2, 5, 4, 4)), ((2, 3, 4, 4), (2, 5, 8, 8))])
def test_factor_transfer_matches_reference(p2, s_shape, t_shape) -> None:
    f_s, f_t = random(*s_shape), random(*t_shape, seed=2)
    loss = FactorTransfer(p1=2, p2=p2)
    value, grad = torch_value_and_grad(loss, f_s, torch.tensor(f_t))
    assert value == pytest.approx(ft_reference(f_s, f_t, 2, p2), abs=TOL)
    expected = numeric_gradient(lambda s: ft_reference(s, f_t, 2, p2), f_s)
    np.testing.assert_allclose(grad, expected, atol=TOL)


def test_factor_transfer_handles_a_larger_student_map() -> None:
    f_s, f_t = random(2, 3, 8, 8), random(2, 4, 4, 4, seed=3)
    value = FactorTransfer()(torch.tensor(f_s), torch.tensor(f_t)).item()
    assert value == pytest.approx(ft_reference(f_s, f_t, 2, 1), abs=TOL)


# ---------------------------------------------------------------- neuron selectivity transfer
def nst_reference(f_s: np.ndarray, f_t: np.ndarray) -> float:
    f_s, f_t = pool_larger(f_s, f_t)
    batch = f_s.shape[0]
    s = f_s.reshape(batch, f_s.shape[1], -1)
    t = f_t.reshape(batch, f_t.shape[1], -1)
    s = s / np.linalg.norm(s, axis=2, keepdims=True)
    t = t / np.linalg.norm(t, axis=2, keepdims=True)

    def kernel_mean(a, b):
        total = 0.0
        for n in range(batch):
            for i in range(a.shape[1]):
                for j in range(b.shape[1]):
                    total += np.dot(a[n, i], b[n, j]) ** 2
        return total / (batch * a.shape[1] * b.shape[1])

    return kernel_mean(t, t) + kernel_mean(s, s) - 2 * kernel_mean(s, t)


@pytest.mark.parametrize("s_shape,t_shape", [((2, 3, 4, 4), (2, 4, 4, 4)), ((2, 3, 4, 4), (2, 4, 8, 8))])
def test_nst_matches_reference(s_shape, t_shape) -> None:
    f_s, f_t = random(*s_shape), random(*t_shape, seed=4)
    value, grad = torch_value_and_grad(lambda s, t: NSTLoss()([s], [t])[0], f_s, torch.tensor(f_t))
    assert value == pytest.approx(nst_reference(f_s, f_t), abs=TOL)
    np.testing.assert_allclose(grad, numeric_gradient(lambda s: nst_reference(s, f_t), f_s), atol=TOL)


def test_nst_zero_for_identical_maps_larger_student_and_gradcheck() -> None:
    f = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    assert NSTLoss()([f], [f.clone()])[0].item() == pytest.approx(0.0, abs=1e-12)
    f_s, f_t = random(2, 3, 8, 8), random(2, 2, 4, 4, seed=5)
    value = NSTLoss()([torch.tensor(f_s)], [torch.tensor(f_t)])[0].item()
    assert value == pytest.approx(nst_reference(f_s, f_t), abs=TOL)
    student = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 2, 2, 2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: NSTLoss()([s], [teacher])[0], (student,))


# ---------------------------------------------------------------- FSP
def fsp_reference(maps: list[np.ndarray]) -> list[np.ndarray]:
    matrices = []
    for bottom, top in zip(maps[:-1], maps[1:]):
        bottom, top = pool_larger(bottom, top)
        batch, c1, c2 = bottom.shape[0], bottom.shape[1], top.shape[1]
        g = np.zeros((batch, c1, c2))
        for n in range(batch):
            for i in range(c1):
                for j in range(c2):
                    g[n, i, j] = (bottom[n, i] * top[n, j]).mean()
        matrices.append(g)
    return matrices


def fsp_loss_reference(g_s: list[np.ndarray], g_t: list[np.ndarray]) -> list[float]:
    return [((s - t) ** 2).mean() for s, t in zip(fsp_reference(g_s), fsp_reference(g_t))]


def test_fsp_matches_reference() -> None:
    shapes = [(2, 3, 8, 8), (2, 4, 8, 8), (2, 5, 4, 4)]
    g_s = [random(*shape, seed=6) for shape in shapes]
    g_t = [random(*shape, seed=7) for shape in shapes]
    loss = FSP(shapes, shapes)
    values = loss([torch.tensor(f) for f in g_s], [torch.tensor(f) for f in g_t])
    expected = fsp_loss_reference(g_s, g_t)
    assert len(values) == 2
    for value, reference in zip(values, expected):
        assert value.item() == pytest.approx(reference, abs=TOL)

    first = torch.tensor(g_s[0], requires_grad=True)
    total = sum(loss([first, *[torch.tensor(f) for f in g_s[1:]]], [torch.tensor(f) for f in g_t]))
    total.backward()
    numeric = numeric_gradient(lambda x: sum(fsp_loss_reference([x, *g_s[1:]], g_t)), g_s[0])
    np.testing.assert_allclose(first.grad.numpy(), numeric, atol=TOL)


def test_fsp_rejects_unequal_channels_with_a_clear_message() -> None:
    with pytest.raises(ValueError) as error:
        FSP([(2, 16, 32, 32), (2, 32, 16, 16)], [(2, 16, 32, 32), (2, 64, 16, 16)])
    message = str(error.value)
    assert "feature 1" in message and "32" in message and "64" in message
    assert "equal channels per stage" in message and "resnet56->resnet20" in message


# ---------------------------------------------------------------- VID
def vid_reference(source: np.ndarray, target: np.ndarray, weights: list[np.ndarray], log_scale: np.ndarray) -> float:
    source, target = pool_larger(source, target)

    def conv1x1(x, w):  # w (out, in, 1, 1)
        return np.einsum("oi,bihw->bohw", w[:, :, 0, 0], x)

    hidden = np.maximum(conv1x1(source, weights[0]), 0)
    hidden = np.maximum(conv1x1(hidden, weights[1]), 0)
    mean = conv1x1(hidden, weights[2])
    variance = np.log1p(np.exp(log_scale)) + 1e-5
    total = 0.0
    for c in range(mean.shape[1]):
        total += (0.5 * ((mean[:, c] - target[:, c]) ** 2 / variance[c] + np.log(variance[c]))).sum()
    return total / mean.size


@pytest.mark.parametrize("s_hw,t_hw", [(4, 4), (8, 4), (4, 8)])
def test_vid_matches_reference(s_hw, t_hw) -> None:
    torch.manual_seed(0)
    loss = VIDLoss(3, 5, 4).double()
    with torch.no_grad():
        loss.log_scale.add_(torch.randn(4, dtype=torch.float64))
    weights = [loss.regressor[i].weight.detach().numpy() for i in (0, 2, 4)]
    log_scale = loss.log_scale.detach().numpy()
    source, target = random(2, 3, s_hw, s_hw, seed=8), random(2, 4, t_hw, t_hw, seed=9)
    value, grad = torch_value_and_grad(loss, source, torch.tensor(target))
    assert value == pytest.approx(vid_reference(source, target, weights, log_scale), abs=TOL)
    numeric = numeric_gradient(lambda s: vid_reference(s, target, weights, log_scale), source)
    np.testing.assert_allclose(grad, numeric, atol=TOL)


def test_vid_initial_variance_is_five_and_convs_have_no_bias() -> None:
    loss = VIDLoss(8, 16, 16)
    variance = torch.nn.functional.softplus(loss.log_scale) + 1e-5
    torch.testing.assert_close(variance, torch.full((16,), 5.0))
    assert all(module.bias is None for module in loss.regressor if isinstance(module, torch.nn.Conv2d))
    assert [type(m).__name__ for m in loss.regressor] == ["Conv2d", "ReLU", "Conv2d", "ReLU", "Conv2d"]


# ---------------------------------------------------------------- activation boundaries
def ab_reference(g_s: list[np.ndarray], g_t: list[np.ndarray], margin: float = 1.0) -> list[float]:
    count = len(g_s)
    batch = g_s[0].shape[0]
    losses = []
    for layer, (s, t) in enumerate(zip(g_s, g_t)):
        total = 0.0
        for value_s, value_t in zip(s.reshape(-1), t.reshape(-1)):
            if value_s > -margin and value_t <= 0:
                total += (value_s + margin) ** 2
            if value_s <= margin and value_t > 0:
                total += (value_s - margin) ** 2
        losses.append(2.0 ** (layer - count + 1) * total / batch / 1000 * 3)
    return losses


def test_ab_loss_matches_reference() -> None:
    g_s = [random(2, 3, 4, 4, seed=10), random(2, 4, 2, 2, seed=11)]
    g_t = [random(2, 3, 4, 4, seed=12), random(2, 4, 2, 2, seed=13)]
    loss = ABLoss(feat_num=2)
    assert loss.w == [0.5, 1]
    student = [torch.tensor(f, requires_grad=True) for f in g_s]
    values = loss(student, [torch.tensor(f) for f in g_t])
    for value, reference in zip(values, ab_reference(g_s, g_t)):
        assert value.item() == pytest.approx(reference, abs=TOL)
    sum(values).backward()
    for layer in range(2):
        def as_function(x, layer=layer):
            maps = [x if i == layer else g_s[i] for i in range(2)]
            return sum(ab_reference(maps, g_t))
        numeric = numeric_gradient(as_function, g_s[layer])
        np.testing.assert_allclose(student[layer].grad.numpy(), numeric, atol=TOL)


# ---------------------------------------------------------------- FitNet hint
def test_hint_loss_is_mse() -> None:
    f_s, f_t = random(2, 3, 4, 4, seed=14), random(2, 3, 4, 4, seed=15)

    def reference(s):
        return sum((a - b) ** 2 for a, b in zip(s.reshape(-1), f_t.reshape(-1))) / s.size

    value, grad = torch_value_and_grad(HintLoss(), f_s, torch.tensor(f_t))
    assert value == pytest.approx(reference(f_s), abs=TOL)
    np.testing.assert_allclose(grad, numeric_gradient(reference, f_s), atol=TOL)
    assert math.isclose(HintLoss()(torch.ones(3), torch.ones(3)).item(), 0.0)
