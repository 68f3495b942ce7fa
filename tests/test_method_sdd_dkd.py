"""SD-DKD (Wei, Luo & Luo, CVPR 2024, on DKD): the loss against a float64 re-derivation (official
region weights times DKD per cell), the unweighted case as DKD over all cells, the warm-up and the
method on real networks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from distiller_zoo import METHODS, dkd_loss, sdd_dkd_loss
from test_method_dkd import dkd_reference
from test_method_sdd_kd import cell_batch, network_features, sdd_method, weights_reference


@pytest.mark.parametrize("alpha,beta,temperature", [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0)])
def test_sdd_dkd_loss_matches_float64_reference(alpha: float, beta: float, temperature: float) -> None:
    student, teacher, labels = cell_batch(seed=5, classes=6)
    value = sdd_dkd_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(labels), alpha, beta,
                         temperature)
    per_cell = np.array([[dkd_reference(s[None], t[None], np.array([label]), alpha, beta, temperature)
                          for s, t in zip(rows_s, rows_t)]
                         for rows_s, rows_t, label in zip(student, teacher, labels)])
    assert value.item() == pytest.approx((weights_reference(teacher, labels, 2.0) * per_cell).mean(), rel=1e-10)


def test_unit_region_weights_give_dkd_over_all_cells() -> None:
    student, teacher, labels = (torch.tensor(a) for a in cell_batch(seed=6, classes=6))
    value = sdd_dkd_loss(student, teacher, labels, 1.0, 8.0, 4.0, complementary_weight=1.0)
    rows = dkd_loss(student.reshape(-1, 6), teacher.reshape(-1, 6), labels.repeat_interleave(5), 1.0, 8.0, 4.0)
    assert value.item() == pytest.approx(rows.item(), rel=1e-12)


def test_method_ramps_in_over_the_warmup() -> None:
    method, student, teacher = sdd_method("sdd_dkd", "resnet8", "resnet8", dkd_beta=2.0, dkd_warmup=20)
    images, labels = torch.randn(3, 3, 32, 32), torch.tensor([1, 2, 7])
    student.eval()  # the same BatchNorm statistics for both epochs
    values = [method.loss(network_features(student, teacher, images, labels, epoch)).item() for epoch in (5, 25)]
    student_cells, teacher_cells = method.cells(network_features(student, teacher, images, labels))
    full = sdd_dkd_loss(student_cells, teacher_cells, labels, 1.0, 2.0, 4.0).item()
    assert values == pytest.approx([full / 4, full], rel=1e-6)
    assert (METHODS["sdd_dkd"].label(), METHODS["sdd_dkd"].default_gamma, METHODS["sdd_dkd"].default_beta) == (
        "SD-DKD", 1.0, 1.0)
