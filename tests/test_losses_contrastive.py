"""RRD and DCD losses against float64 NumPy re-derivations, plus the RRD queue's ring-buffer logic."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from distiller_zoo import DCDLoss, RRDLoss
from helpers import numeric_gradient

TOL = 1e-5




def embed(x: np.ndarray, linear: torch.nn.Linear) -> np.ndarray:
    weight, bias = linear.weight.detach().numpy(), linear.bias.detach().numpy()
    out = np.array([weight @ row + bias for row in x])
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def log_softmax(row: np.ndarray) -> np.ndarray:
    shifted = row - row.max()
    return shifted - np.log(np.exp(shifted).sum())


def options(**overrides) -> SimpleNamespace:
    values = dict(s_dim=6, t_dim=5, feat_dim=4, nce_k=10, nce_t_s=0.04, nce_t_t=0.1, n_data=100)
    values.update(overrides)
    return SimpleNamespace(**values)


# ---------------------------------------------------------------- RRD
def rrd_reference(f_s, f_t, module: RRDLoss, queue: np.ndarray) -> float:
    s, t = embed(f_s, module.embed_s), embed(f_t, module.embed_t)
    total = 0.0
    for s_row, t_row in zip(s, t):
        teacher_logits = np.array([np.dot(t_row, q) for q in queue]) / module.nce_t_t
        student_logits = np.array([np.dot(s_row, q) for q in queue]) / module.nce_t_s
        teacher_probs = np.exp(log_softmax(teacher_logits))
        total += -(teacher_probs * log_softmax(student_logits)).sum()
    return total / len(f_s)


def test_rrd_matches_reference_using_the_queue_before_the_step() -> None:
    torch.manual_seed(0)
    module = RRDLoss(options()).double()
    f_s, f_t = np.random.default_rng(1).standard_normal((3, 6)), np.random.default_rng(2).standard_normal((3, 5))
    queue_before = module.queue.clone().numpy()
    student = torch.tensor(f_s, requires_grad=True)
    value = module(student, torch.tensor(f_t))
    value.backward()
    assert value.item() == pytest.approx(rrd_reference(f_s, f_t, module, queue_before), abs=TOL)
    numeric = numeric_gradient(lambda s: rrd_reference(s, f_t, module, queue_before), f_s)
    np.testing.assert_allclose(student.grad.numpy(), numeric, atol=TOL)
    # the step enqueued the normalised teacher embeddings after computing the loss
    np.testing.assert_allclose(module.queue[:3].numpy(), embed(f_t, module.embed_t), atol=1e-12)
    assert module.queue_ptr.item() == 3


def test_rrd_queue_is_initialised_with_unit_rows() -> None:
    module = RRDLoss(options(nce_k=32, feat_dim=8))
    assert module.queue.shape == (32, 8) and module.queue_ptr.dtype == torch.long
    torch.testing.assert_close(module.queue.norm(dim=1), torch.ones(32))


def test_rrd_queue_wraps_with_partial_and_oversized_batches() -> None:
    """nce_k = 10: batches of 4, 4, 4 (wraps), a partial 3, then 13 > nce_k; checked by hand."""
    module = RRDLoss(options(s_dim=4, t_dim=4, feat_dim=4, nce_k=10)).double()
    with torch.no_grad():  # teacher embed = identity, so the queued rows are the inputs normalised
        module.embed_t.weight.copy_(torch.eye(4))
        module.embed_t.bias.zero_()
    initial = module.queue.clone()
    next_id = [0]

    def step(batch_size: int) -> torch.Tensor:
        # sample n is the unit vector (1, n, 0, 0) / norm: distinguishable rows
        ids = torch.arange(next_id[0], next_id[0] + batch_size, dtype=torch.float64)
        next_id[0] += batch_size
        teacher = torch.stack([torch.ones_like(ids), ids, torch.zeros_like(ids), torch.zeros_like(ids)], 1)
        module(torch.randn(batch_size, 4, dtype=torch.float64), teacher)
        return ids

    def row_id(position: int) -> float:
        row = module.queue[position]
        return round((row[1] / row[0]).item(), 6)

    step(4)  # ids 0-3 -> slots 0-3
    assert module.queue_ptr.item() == 4
    assert [row_id(i) for i in range(4)] == [0, 1, 2, 3]
    torch.testing.assert_close(module.queue[4:], initial[4:])
    step(4)  # ids 4-7 -> slots 4-7
    assert module.queue_ptr.item() == 8
    step(4)  # ids 8, 9 -> slots 8, 9; ids 10, 11 wrap to slots 0, 1
    assert module.queue_ptr.item() == 2
    assert [row_id(i) for i in range(10)] == [10, 11, 2, 3, 4, 5, 6, 7, 8, 9]
    step(3)  # partial batch: ids 12-14 -> slots 2-4
    assert module.queue_ptr.item() == 5
    assert [row_id(i) for i in range(10)] == [10, 11, 12, 13, 14, 5, 6, 7, 8, 9]
    step(13)  # ids 15-27, only the newest 10 (18-27) survive: slots 8,9,0,...,7
    assert module.queue_ptr.item() == 8
    assert [row_id(i) for i in range(10)] == [20, 21, 22, 23, 24, 25, 26, 27, 18, 19]


def test_rrd_loss_falls_when_the_student_copies_the_teacher() -> None:
    torch.manual_seed(0)
    opt = options(s_dim=16, t_dim=16, feat_dim=16, nce_k=64)
    copied, independent = [], []
    for trial in range(5):
        module = RRDLoss(opt)
        with torch.no_grad():
            module.embed_s.load_state_dict(module.embed_t.state_dict())
            module.queue.copy_(torch.nn.functional.normalize(module.embed_t(torch.randn(64, 16)), dim=1))
        teacher = torch.randn(8, 16)
        ptr = module.queue_ptr.clone()
        queue = module.queue.clone()
        copied.append(module(teacher.clone(), teacher).item())
        module.queue.copy_(queue), module.queue_ptr.copy_(ptr)
        independent.append(module(torch.randn(8, 16), teacher).item())
    assert np.mean(copied) < np.mean(independent)
    assert all(c < i for c, i in zip(copied, independent))


# ---------------------------------------------------------------- DCD
def dcd_reference(f_s, f_t, module: DCDLoss, tau: float, bias: float) -> float:
    s, t = embed(f_s, module.embed_s), embed(f_t, module.embed_t)
    batch = len(s)
    scale = min(np.exp(tau), 10.0)
    logits = np.array([[np.dot(s[i], t[j]) * scale + bias for j in range(batch)] for i in range(batch)])
    contrastive = -np.mean([log_softmax(logits[i])[i] for i in range(batch)])
    column_probs = np.exp(np.array([log_softmax(logits[:, j]) for j in range(batch)]))  # [j, i] = softmax_dim0^T
    kl = 0.0
    for i in range(batch):
        row_log_probs = log_softmax(logits[i])
        for j in range(batch):
            target = column_probs[i, j]  # softmax(logits, dim=0)^T [i, j] = softmax over column i, entry j
            kl += target * (np.log(target) - row_log_probs[j])
    return contrastive + 0.5 * kl / batch


@pytest.mark.parametrize("tau,bias", [(1.0, 0.0), (0.3, -0.7), (2.5, 0.4)])  # 2.5: exp clamps at 10
def test_dcd_matches_reference(tau, bias) -> None:
    torch.manual_seed(0)
    module = DCDLoss(options()).double()
    with torch.no_grad():
        module.tau.fill_(tau)
        module.b.fill_(bias)
    f_s, f_t = np.random.default_rng(3).standard_normal((4, 6)), np.random.default_rng(4).standard_normal((4, 5))
    student = torch.tensor(f_s, requires_grad=True)
    value = module(student, torch.tensor(f_t))
    value.backward()
    assert value.item() == pytest.approx(dcd_reference(f_s, f_t, module, tau, bias), abs=TOL)
    numeric = numeric_gradient(lambda s: dcd_reference(s, f_t, module, tau, bias), f_s)
    np.testing.assert_allclose(student.grad.numpy(), numeric, atol=TOL)
    numeric_b = numeric_gradient(lambda b: dcd_reference(f_s, f_t, module, tau, b[0]), np.array([bias]))
    assert module.b.grad.item() == pytest.approx(numeric_b[0], abs=TOL)
    if tau < np.log(10):
        numeric_tau = numeric_gradient(lambda x: dcd_reference(f_s, f_t, module, x[0], bias), np.array([tau]))
        assert module.tau.grad.item() == pytest.approx(numeric_tau[0], abs=TOL)
        assert module.tau.grad.abs().item() > 0
    else:
        assert module.tau.grad.item() == 0.0  # clamped scale


def test_dcd_parameters_initial_values_and_gradients() -> None:
    module = DCDLoss(options())
    names = dict(module.named_parameters())
    assert {"tau", "b"} <= set(names)
    assert module.tau.item() == 1.0 and module.b.item() == 0.0
    module(torch.randn(8, 6), torch.randn(8, 5)).backward()
    assert module.tau.grad is not None and module.tau.grad.abs().item() > 0
    assert module.b.grad is not None
    assert module.embed_t.weight.grad is not None


def test_dcd_gradcheck() -> None:
    torch.manual_seed(0)
    module = DCDLoss(options()).double()
    student = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(4, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: module(s, teacher), (student,))


def test_dcd_loss_falls_when_the_student_copies_the_teacher() -> None:
    torch.manual_seed(0)
    opt = options(s_dim=16, t_dim=16, feat_dim=32)
    for trial in range(5):
        module = DCDLoss(opt)
        module.embed_s.load_state_dict(module.embed_t.state_dict())
        teacher = torch.randn(16, 16)
        copied = module(teacher.clone(), teacher).item()
        independent = module(torch.randn(16, 16), teacher).item()
        assert copied < independent
