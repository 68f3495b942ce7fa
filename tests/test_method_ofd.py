"""OFD (Heo et al., ICCV 2019): the margin against a numerically integrated truncated Gaussian, the
partial L2 against its case-by-case form, the stage weighting, gradients, the method's wiring, and a
training step with the teacher in train mode (batch statistics) as the official code runs it."""
from __future__ import annotations

import argparse
import math
from copy import deepcopy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training import student as train_student
from dataset.teacher_bank import decide
from distiller_zoo import METHODS, DistillContext, DistillTask, Features, OFDLoss, distillation_loss, \
    get_margin_from_BN
from distiller_zoo.base import Distiller, register
from helper.errors import UserError
from helper.folding import batchnorm_layers
from helper.provenance import identity_differences, training_settings
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


class BatchStatisticsNorm(torch.nn.Module):
    """(x - batch mean) / sqrt(biased batch var + eps) * gamma + beta per channel: a BatchNorm2d in
    train mode, written out (the reference's teacher normalisation)."""

    def __init__(self, bn: torch.nn.BatchNorm2d) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = bn.weight.detach().double(), bn.bias.detach().double(), bn.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = (x - mean).pow(2).mean(dim=(0, 2, 3), keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def batch_statistics_teacher(teacher: torch.nn.Module) -> torch.nn.Module:
    """A float64 copy of ``teacher`` whose every BatchNorm2d is a BatchStatisticsNorm (used in eval mode)."""
    copy = deepcopy(teacher).double().eval()
    for name, module in list(copy.named_modules()):
        if isinstance(module, torch.nn.BatchNorm2d):
            copy.set_submodule(name, BatchStatisticsNorm(module))
    return copy


def reference_step(student: torch.nn.Module, connectors: torch.nn.Module, teacher: torch.nn.Module,
                   margins: list[torch.Tensor], images: torch.Tensor, labels: torch.Tensor, beta: float
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CE + beta * OFD in float64 by the paper's case-by-case form (eq. 4 with the margin ReLU), the
    teacher's maps from ``teacher`` as given; returns the loss and the gradients by parameter name."""
    student, connectors = deepcopy(student).double().train(), deepcopy(connectors).double().train()
    images = images.double()
    student_feats, logits = student(images, is_feat=True, preact=True)
    with torch.no_grad():
        teacher_feats, _ = teacher(images, is_feat=True, preact=True)
    distill = images.new_zeros(())
    for index, (connector, margin) in enumerate(zip(connectors, margins)):
        s = connector(student_feats[1 + index])
        t = teacher_feats[1 + index]
        m = margin.double().view(1, -1, 1, 1).expand_as(t)
        case_target = (t > 0) | ((m < t) & (t <= 0) & (s > t))
        case_margin = (t <= m) & (s > m)
        squared = torch.where(case_target, (s - t) ** 2, torch.where(case_margin, (s - m) ** 2, torch.zeros_like(s)))
        distill = distill + squared.sum() / 2 ** (len(margins) - 1 - index)
    loss = F.cross_entropy(logits, labels) + beta * distill / images.shape[0]
    loss.backward()
    gradients = {f"student.{name}": p.grad for name, p in student.named_parameters()}
    gradients.update({f"connectors.{name}": p.grad for name, p in connectors.named_parameters()})
    return loss.detach(), gradients


def randomised_teacher(arch: str = "resnet8", classes: int = 10) -> torch.nn.Module:
    """A teacher whose BatchNorms have non-trivial running statistics and affine parameters (so that
    eval and train mode normalise differently)."""
    teacher = model_dict[arch](num_classes=classes)
    generator = torch.Generator().manual_seed(3)
    for module in teacher.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(torch.randn(size, generator=generator) * 0.3)
            module.running_var.copy_(torch.rand(size, generator=generator) * 2 + 0.5)
            module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(size, generator=generator) * 0.5)
    return teacher.eval().requires_grad_(False)


def test_training_step_runs_the_teacher_with_batch_statistics() -> None:
    """One OFD step as train_student runs it (resnet8 -> resnet8, batch 6): the loss and every student and
    connector gradient equal a float64 computation whose teacher normalises with the batch's statistics."""
    options = argparse.Namespace(image_size=None, sync_bn=False, channels_last=False, compile=False)
    torch.manual_seed(0)
    student, teacher = model_dict["resnet8"](num_classes=10), randomised_teacher()
    running_before = {name: value.clone() for name, value in teacher.state_dict().items()}
    shapes = [train_student.feature_shapes(model, True, torch.device("cpu")) for model in (student, teacher)]
    method = METHODS["ofd"](DistillContext(options, student, teacher, *shapes, torch.zeros(0), torch.device("cpu")))
    forward_teacher = train_student.teacher_for_forward(teacher, options, torch.device("cpu"), method.teacher_mode)
    task = DistillTask(student, forward_teacher, method, gamma=1.0, alpha=0.0, beta=1e-3, kd_T=4.0)
    images, labels = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    margins = [getattr(method.criterion, f"margin{i + 1}").flatten() for i in range(3)]
    expected, expected_grads = reference_step(student, method.criterion.connectors, batch_statistics_teacher(teacher),
                                              margins, images, labels, 1e-3)
    task.train_mode()
    assert forward_teacher.training and not teacher.training
    output = task.compute(images, labels, torch.arange(6))
    output.total.backward()
    assert output.total.item() == pytest.approx(expected.item(), rel=1e-5)
    gradients = {f"student.{name}": p.grad for name, p in student.named_parameters()}
    gradients.update({f"connectors.{name}": p.grad for name, p in method.criterion.connectors.named_parameters()})
    assert gradients.keys() == expected_grads.keys()
    for name, gradient in gradients.items():
        reference = expected_grads[name]
        assert float((gradient.double() - reference).abs().max()) <= 1e-5 * float(reference.abs().max()) + 1e-9, name
    # the eval-mode teacher (running statistics) gives another loss: what this test tells apart
    eval_loss, _ = reference_step(student, method.criterion.connectors, deepcopy(teacher).double(), margins, images,
                                  labels, 1e-3)
    assert abs(eval_loss.item() - expected.item()) > 1e-3 * expected.item()
    assert all(torch.equal(value, running_before[name]) for name, value in teacher.state_dict().items())


def test_train_mode_teacher_is_not_folded_and_has_no_bank() -> None:
    """What OFD's teacher_mode = "train" changes in train_student: an unfolded, frozen teacher copy, no
    teacher bank (with the reason), and a run identity apart from the eval-mode OFD runs before it."""
    options = argparse.Namespace(image_size=None, sync_bn=False, channels_last=False, compile=False)
    teacher = randomised_teacher()
    train_copy = train_student.teacher_for_forward(teacher, options, torch.device("cpu"), "train")
    eval_copy = train_student.teacher_for_forward(teacher, options, torch.device("cpu"))
    assert len(list(batchnorm_layers(train_copy))) == len(list(batchnorm_layers(teacher)))
    assert not list(batchnorm_layers(eval_copy))  # resnet8 folds completely
    assert train_copy is not teacher and not any(p.requires_grad for p in train_copy.parameters())
    blocker = train_student.why_no_bank(argparse.Namespace(distill="ofd", loader="fast", dataset="cifar100"))
    assert "train mode" in blocker and "batch" in blocker
    with pytest.raises(UserError, match="train mode"):
        decide("on", blocker, 240, False)
    settings = training_settings(argparse.Namespace(epochs=2), teacher_mode=METHODS["ofd"].teacher_mode)
    assert settings == {"epochs": 2, "teacher_mode": "train"}
    assert training_settings(argparse.Namespace(epochs=2), teacher_mode=METHODS["kd"].teacher_mode) == {"epochs": 2}
    old = {"settings": {"epochs": 2}}  # an OFD run recorded before the teacher ran in train mode
    assert identity_differences(old, {"settings": settings}) == [("teacher_mode", "(absent)", "train")]
    with pytest.raises(ValueError, match="teacher_mode must be one of"):
        register(type("Misdeclared", (Distiller,), {"teacher_mode": "frozen", "__module__": "distiller_zoo.misdeclared"}))
    assert "misdeclared" not in METHODS
