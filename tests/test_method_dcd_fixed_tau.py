"""DCD's fixed-temperature ablation (--dcd_fixed_tau): the reference's DCDLoss(opt, trainable=False),
logits = cos(s_i, t_j) * opt.nce_t with b = 0, neither trained."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from training import student as train_student
from distiller_zoo import DCDLoss
from helpers import numeric_gradient, write_published_teacher


def options(**overrides) -> SimpleNamespace:
    return SimpleNamespace(**{**dict(s_dim=6, t_dim=5, feat_dim=4, nce_t=0.07), **overrides})


def reference(f_s: np.ndarray, f_t: np.ndarray, module: DCDLoss, nce_t: float) -> float:
    """CE over the diagonal + 0.5 * KL(row softmax || column softmax^T) / B, with loops, in float64."""
    def embed(x, linear):
        weight, bias = linear.weight.detach().double().numpy(), linear.bias.detach().double().numpy()
        rows = np.array([weight @ row + bias for row in x])
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    def log_softmax(row):
        return row - row.max() - np.log(np.exp(row - row.max()).sum())

    s, t = embed(f_s, module.embed_s), embed(f_t, module.embed_t)
    batch = len(s)
    logits = np.array([[np.dot(s[i], t[j]) * nce_t for j in range(batch)] for i in range(batch)])
    contrastive = -np.mean([log_softmax(logits[i])[i] for i in range(batch)])
    kl = 0.0
    for i in range(batch):
        target = np.exp(log_softmax(logits[:, i]))  # column i of softmax(logits, dim=0)
        kl += sum(target[j] * (np.log(target[j]) - log_softmax(logits[i])[j]) for j in range(batch))
    return contrastive + 0.5 * kl / batch


@pytest.mark.parametrize("nce_t", [0.07, 0.5, 3.0])
def test_value_and_gradient_match_the_reference(nce_t: float) -> None:
    torch.manual_seed(0)
    module = DCDLoss(options(nce_t=nce_t), trainable=False).double()
    f_s, f_t = np.random.default_rng(1).standard_normal((5, 6)), np.random.default_rng(2).standard_normal((5, 5))
    student = torch.tensor(f_s, requires_grad=True)
    value = module(student, torch.tensor(f_t))
    value.backward()
    expected = reference(f_s, f_t, module, nce_t)
    assert value.item() == pytest.approx(expected, rel=1e-5)
    numeric = numeric_gradient(lambda s: reference(s, f_t, module, nce_t), f_s)
    np.testing.assert_allclose(student.grad.numpy(), numeric, rtol=1e-5, atol=1e-8)


def test_tau_and_b_are_fixed_and_untrained() -> None:
    module = DCDLoss(options(nce_t=0.2), trainable=False)
    assert module.tau.item() == pytest.approx(0.2) and module.b.item() == 0.0
    assert not module.tau.requires_grad and not module.b.requires_grad
    trained = [name for name, parameter in module.named_parameters() if parameter.requires_grad]
    assert trained == ["embed_s.weight", "embed_s.bias", "embed_t.weight", "embed_t.bias"]
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=1.0, weight_decay=0.1)
    module(torch.randn(8, 6), torch.randn(8, 5)).backward()
    optimizer.step()
    assert module.tau.item() == pytest.approx(0.2) and module.b.item() == 0.0
    copy = DCDLoss(options(nce_t=0.9), trainable=False)
    copy.load_state_dict(module.state_dict())  # checkpoints round-trip, nce_t included
    assert copy.tau.item() == pytest.approx(0.2)


@pytest.mark.slow
def test_from_the_command_line(cifar_folder: Path, tmp_path: Path) -> None:
    teacher = write_published_teacher(tmp_path, "resnet8")
    argv = ["--path_t", str(teacher), "--distill", "dcd", "--dcd_fixed_tau", "--nce_t", "0.5", "--model_s", "resnet8",
            "--epochs", "1", "--batch_size", "16", "--data_folder", str(cifar_folder), "--save_folder",
            str(tmp_path), "--device", "cpu", "--no_progress"]
    train_student.main(argv)
    opt = train_student.parse_args(argv)
    state = torch.load(tmp_path / "student" / "student_model" / train_student.run_name(opt) / "resnet8_last.pth",
                       weights_only=True)
    assert state["opt"]["dcd_fixed_tau"] is True
    assert state["task"]["method"]["criterion.tau"].item() == pytest.approx(0.5)
    assert state["task"]["method"]["criterion.b"].item() == 0.0
