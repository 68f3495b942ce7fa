"""SD-KD (Wei, Luo & Luo, CVPR 2024): the multi-scale logits against numpy pooling, the region
weights and the loss against a float64 re-derivation of the official four cases, M = [1] = KD,
gradients and the method's wiring on real networks."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from distiller_zoo import METHODS, DistillContext, DistillKL, Features, multi_scale_logits, region_weights, sdd_kd_loss
from helper.loop import Progress
from helpers import adaptive_pool, kd_reference
from models import model_dict


def cells_reference(feature_map: np.ndarray, weight: np.ndarray, bias: np.ndarray, scales: tuple[int, ...]
                    ) -> np.ndarray:
    """Pool the map to 4x4, each scale from that, then W x + b per cell; (B, N, K), scale by scale, row-major."""
    grid = adaptive_pool(feature_map, 4, 4)
    cells = [adaptive_pool(grid, s, s).reshape(*grid.shape[:2], s * s) for s in scales]
    return np.einsum("bcn,kc->bnk", np.concatenate(cells, axis=2), weight) + bias


@pytest.mark.parametrize("size", [8, 2])  # a CIFAR ResNet's 8x8 last map; MobileNetV2's 2x2 one
def test_multi_scale_logits_match_numpy_pooling(size: int) -> None:
    rng = np.random.default_rng(size)
    feature_map = rng.standard_normal((3, 5, size, size))
    classifier = torch.nn.Linear(5, 7).double()
    value = multi_scale_logits(torch.tensor(feature_map), classifier, (1, 2, 4))
    expected = cells_reference(feature_map, classifier.weight.detach().numpy(), classifier.bias.detach().numpy(),
                               (1, 2, 4))
    assert value.shape == (3, 21, 7)
    np.testing.assert_allclose(value.detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    # the global cell is the classifier of the average-pooled map: the network's own logits
    global_logits = classifier(torch.tensor(feature_map).mean(dim=(2, 3)))
    torch.testing.assert_close(value[:, 0], global_logits)


def weights_reference(teacher_cells: np.ndarray, labels: np.ndarray, complementary: float) -> np.ndarray:
    """The official masks: global-true/local-wrong and global-wrong/local-true cells (not the global
    one) weigh 2; global-true/local-true and global-wrong/local-wrong weigh 1."""
    weights = np.zeros(teacher_cells.shape[:2])
    for b, (row, label) in enumerate(zip(teacher_cells, labels)):
        global_true = row[0].argmax() == label
        for n, cell in enumerate(row):
            local_true = cell.argmax() == label
            if n > 0 and global_true != local_true:
                weights[b, n] = complementary
            elif global_true == local_true:
                weights[b, n] = 1.0
    return weights


def cell_batch(seed: int, batch: int = 5, cells: int = 5, classes: int = 4) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return (2 * rng.standard_normal((batch, cells, classes)), 3 * rng.standard_normal((batch, cells, classes)),
            rng.integers(0, classes, size=batch))


def test_region_weights_follow_the_official_cases() -> None:
    _, teacher, labels = cell_batch(seed=0, batch=40)
    weights = region_weights(torch.tensor(teacher), torch.tensor(labels), 2.0).numpy()
    expected = weights_reference(teacher, labels, 2.0)
    assert (weights == expected).all() and {1.0, 2.0} <= set(np.unique(weights))


@pytest.mark.parametrize("temperature,complementary", [(4.0, 2.0), (1.0, 3.0)])
def test_sdd_kd_loss_matches_float64_reference(temperature: float, complementary: float) -> None:
    student, teacher, labels = cell_batch(seed=1)
    value = sdd_kd_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(labels), temperature,
                        complementary)
    weights = weights_reference(teacher, labels, complementary)
    per_cell = np.array([[kd_reference(s[None], t[None], temperature) for s, t in zip(rows_s, rows_t)]
                         for rows_s, rows_t in zip(student, teacher)])
    assert value.item() == pytest.approx((weights * per_cell).mean(), rel=1e-10)


def test_global_scale_only_is_plain_kd() -> None:
    """M = [1]: one cell per image, always consistent, so SD-KD is KD on the global logits."""
    student, teacher, labels = (torch.tensor(a) for a in cell_batch(seed=2, cells=1))
    value = sdd_kd_loss(student, teacher, labels, 4.0)
    assert value.item() == pytest.approx(DistillKL(4.0)(student[:, 0], teacher[:, 0]).item(), rel=1e-12)


def test_sdd_kd_gradient_float64() -> None:
    student, teacher, labels = (torch.tensor(a) for a in cell_batch(seed=3, batch=3, cells=3))
    student.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: sdd_kd_loss(s, teacher, labels, 4.0), (student,))


def sdd_method(key: str, student_arch: str, teacher_arch: str, **flags):
    values = dict(kd_T=4.0, sdd_max_scale=4, sdd_complementary_weight=2.0, dkd_alpha=1.0, dkd_beta=8.0,
                  dkd_T=4.0, dkd_warmup=20)
    values.update(flags)
    student, teacher = model_dict[student_arch](num_classes=10), model_dict[teacher_arch](num_classes=10).eval()
    context = DistillContext(argparse.Namespace(**values), student, teacher, [], [], torch.zeros(0),
                             torch.device("cpu"))
    return METHODS[key](context), student, teacher


def network_features(student, teacher, images: torch.Tensor, labels: torch.Tensor, epoch: int = 1) -> Features:
    student_feats, student_logits = student(images, is_feat=True)
    with torch.no_grad():
        teacher_feats, teacher_logits = teacher(images, is_feat=True)
    return Features(student_feats, teacher_feats, student_logits, teacher_logits, labels, torch.arange(len(labels)),
                    Progress(epoch, 240, 0, 10))


def test_method_on_networks_with_a_head_after_the_last_stage() -> None:
    """wrn_16_1 (final BN-ReLU before pooling) -> resnet8: the global cells are the networks' logits."""
    method, student, teacher = sdd_method("sdd_kd", "resnet8", "wrn_16_1", sdd_max_scale=2)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 3, 5, 9])
    features = network_features(student.train(), teacher, images, labels)
    student_cells, teacher_cells = method.cells(features)
    assert student_cells.shape == teacher_cells.shape == (4, 5, 10) and not teacher_cells.requires_grad
    torch.testing.assert_close(student_cells[:, 0], features.student_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(teacher_cells[:, 0], features.teacher_logits, rtol=1e-5, atol=1e-5)
    value = method.loss(features)
    assert value.item() == pytest.approx(sdd_kd_loss(student_cells, teacher_cells, labels, 4.0).item(), rel=1e-6)
    value.backward()
    assert student.fc.weight.grad is not None and list(method.parameters()) == []
    assert (METHODS["sdd_kd"].label(), METHODS["sdd_kd"].default_gamma, METHODS["sdd_kd"].default_beta) == (
        "SD-KD", 0.1, 0.9)
