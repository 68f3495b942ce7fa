"""OFD (Heo et al., ICCV 2019): the margin against a numerically integrated truncated Gaussian, the
partial L2 against its case-by-case form, the stage weighting, gradients and the method's wiring."""
from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch

from distiller_zoo import METHODS, DistillContext, Features, OFDLoss, distillation_loss, get_margin_from_BN
from helper.errors import UserError
from helpers import adaptive_pool
from models import model_dict

TOL = 1e-6


def margin_reference(std: float, mean: float) -> float:
    """E[x | x < 0] for x ~ N(mean, std^2) by the trapezoid rule, or -3 std when P(x < 0) <= 0.001."""
    std = abs(std)
    negative_mass = 0.5 * math.erfc(mean / std / math.sqrt(2))
    if negative_mass <= 1e-3:
        return -3 * std
    x = np.linspace(mean - 14 * std, 0.0, 400_001)
    density = np.exp(-((x - mean) / std) ** 2 / 2)
    return float(np.trapezoid(x * density, x) / np.trapezoid(density, x))


def test_margin_is_the_mean_of_the_negative_part() -> None:
    bn = torch.nn.BatchNorm2d(6)
    bn.weight.data = torch.tensor([1.0, 0.5, -2.0, 0.3, 1.0, 0.2])  # |gamma| is the std
    bn.bias.data = torch.tensor([0.0, -1.0, 1.5, 2.0, 3.5, -0.1])    # 3.5 std above 0: the -3 std branch
    margins = get_margin_from_BN(bn)
    expected = [margin_reference(s, m) for s, m in zip(bn.weight.tolist(), bn.bias.tolist())]
    assert margins.tolist() == pytest.approx(expected, rel=1e-5)
    assert margins[0].item() == pytest.approx(-math.sqrt(2 / math.pi), rel=1e-6)  # half-normal mean
    assert margins[4].item() == pytest.approx(-3.0)


def partial_l2_reference(source: np.ndarray, target: np.ndarray, margin: np.ndarray) -> float:
    """Element by element, the three cases of the paper's eq. 4 with the margin ReLU (mdistiller's form)."""
    total = 0.0
    for index in np.ndindex(source.shape):
        s, t, m = source[index], target[index], margin[index[1]]
        if t > 0 or (m < t <= 0 and s > t):
            total += (s - t) ** 2
        elif t <= m and s > m:
            total += (s - m) ** 2
    return total


def random_maps(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape), 1.5 * rng.standard_normal(shape), -np.abs(rng.standard_normal(shape[1]))


def test_partial_l2_matches_the_case_by_case_form() -> None:
    source, target, margin = random_maps((3, 4, 5, 5), seed=0)
    value = distillation_loss(torch.tensor(source), torch.tensor(target), torch.tensor(margin).reshape(1, -1, 1, 1))
    assert value.dtype == torch.float64
    assert value.item() == pytest.approx(partial_l2_reference(source, target, margin), rel=1e-12)
    # nothing to learn where the student is below a negative target (above the margin)
    negative = torch.tensor(target).clamp(max=-0.1)
    assert distillation_loss(negative - 1.0, negative, torch.full((1, 4, 1, 1), -5.0, dtype=torch.float64)).item() == 0


def test_ofd_loss_weights_stages_and_divides_by_the_batch() -> None:
    """Two stages (the deeper weighted 1, the shallower 1/2), the teacher pooled to the student's size."""
    torch.manual_seed(0)
    shapes_s, shapes_t = [(4, 3, 8, 8), (4, 5, 4, 4)], [(4, 6, 8, 8), (4, 7, 8, 8)]
    rng = np.random.default_rng(1)
    margins = [-np.abs(rng.standard_normal(shape[1])) for shape in shapes_t]
    criterion = OFDLoss([3, 5], [6, 7], [torch.tensor(m) for m in margins]).double().train()
    students = [torch.tensor(rng.standard_normal(shape)) for shape in shapes_s]
    teachers = [torch.tensor(rng.standard_normal(shape)) for shape in shapes_t]
    value = criterion(students, teachers)
    connected = [connector(s).detach().numpy() for connector, s in zip(criterion.connectors, students)]
    expected = (partial_l2_reference(connected[0], teachers[0].numpy(), margins[0]) / 2
                + partial_l2_reference(connected[1], adaptive_pool(teachers[1].numpy(), 4, 4), margins[1])) / 4
    assert value.item() == pytest.approx(expected, rel=1e-10)


def test_partial_l2_gradient_float64() -> None:
    source, target, margin = (torch.tensor(a) for a in random_maps((2, 3, 3, 3), seed=2))
    source.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: distillation_loss(s, target, margin.reshape(1, -1, 1, 1)), (source,))


def ofd_method(student_arch: str, teacher_arch: str) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    student, teacher = model_dict[student_arch](num_classes=10), model_dict[teacher_arch](num_classes=10).eval()
    for bn in teacher.get_bn_before_relu():
        bn.weight.data.uniform_(-1.5, 1.5)
        bn.bias.data.normal_(0.0, 1.0)
    shapes = [[f.shape for f in model(torch.zeros(2, 3, 32, 32), is_feat=True, preact=True)[0]]
              for model in (student.eval(), teacher)]
    context = DistillContext(argparse.Namespace(), student, teacher, *shapes, torch.zeros(0), torch.device("cpu"))
    return METHODS["ofd"](context), student, teacher


def test_method_distils_the_last_stages_with_the_teacher_margins() -> None:
    """vgg8 (4 stages) -> resnet8 (3 stages): the last three stages, margins from their BatchNorms."""
    method, student, teacher = ofd_method("resnet8", "vgg8")
    bns = teacher.get_bn_before_relu()[-3:]
    for index, bn in enumerate(bns):
        assert torch.equal(getattr(method.criterion, f"margin{index + 1}").flatten(), get_margin_from_BN(bn))
    assert [c[0].out_channels for c in method.criterion.connectors] == [bn.num_features for bn in bns]
    images = torch.randn(2, 3, 32, 32)
    student_feats, _ = student(images, is_feat=True, preact=True)
    with torch.no_grad():
        teacher_feats, _ = teacher(images, is_feat=True, preact=True)
    logits = torch.zeros(2, 10)
    value = method.loss(Features(student_feats, teacher_feats, logits, logits, torch.zeros(2), torch.arange(2)))
    assert value.item() == pytest.approx(method.criterion(student_feats[1:4], teacher_feats[2:5]).item(), rel=TOL)
    value.backward()
    assert all(p.grad is not None for p in method.criterion.connectors.parameters())
    assert (METHODS["ofd"].uses_preact, METHODS["ofd"].default_beta, METHODS["ofd"].label()) == (True, 1e-3, "OFD")


def test_teacher_without_a_batchnorm_per_stage_is_refused() -> None:
    with pytest.raises(UserError, match="get_bn_before_relu"):
        ofd_method("resnet8", "ShuffleV2")  # its listed BatchNorms have half the stage's channels
