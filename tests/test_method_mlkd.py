"""MLKD: each level against a float64 re-derivation of the official code, the confidence shares, a
gradient check, the weak and strong views of both loaders, the two-view training step, and one epoch."""
from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training import student as train_student
from dataset import ImageData, make_loaders
from dataset.loaders import epoch_generator, normalize, random_crop_flip, strong_view
from dataset.randaugment import draw_strong_params
from distiller_zoo import METHODS, DistillContext, DistillTask, bc_loss, cc_loss, confidence_shares, multi_level_loss
from helper.errors import UserError
from helpers import kd_reference, softmax, write_published_teacher
from models import model_dict

TOL = 1e-5
TEMPERATURES = (4.0, 3.0, 5.0, 2.0, 6.0)


def soft(logits: np.ndarray, temperature: float) -> np.ndarray:
    return np.stack([softmax(row / temperature) for row in logits])


def cc_reference(y_s: np.ndarray, y_t: np.ndarray, temperature: float) -> float:
    """sum_{i,j} (sum_b Pt[b,i] Pt[b,j] - sum_b Ps[b,i] Ps[b,j])^2 / C, with explicit loops."""
    p_s, p_t = soft(y_s, temperature), soft(y_t, temperature)
    batch, classes = p_s.shape
    total = 0.0
    for i in range(classes):
        for j in range(classes):
            teacher = sum(p_t[b, i] * p_t[b, j] for b in range(batch))
            student = sum(p_s[b, i] * p_s[b, j] for b in range(batch))
            total += (teacher - student) ** 2
    return total / classes


def bc_reference(y_s: np.ndarray, y_t: np.ndarray, temperature: float) -> float:
    """sum_{a,b} (sum_c Pt[a,c] Pt[b,c] - sum_c Ps[a,c] Ps[b,c])^2 / B, with explicit loops."""
    p_s, p_t = soft(y_s, temperature), soft(y_t, temperature)
    batch, classes = p_s.shape
    total = 0.0
    for a in range(batch):
        for b in range(batch):
            teacher = sum(p_t[a, c] * p_t[b, c] for c in range(classes))
            student = sum(p_s[a, c] * p_s[b, c] for c in range(classes))
            total += (teacher - student) ** 2
    return total / batch


def official_reference(weak_s, weak_t, strong_s, strong_t, temperatures, standardize=False) -> float:
    """The official KD_ours loss written with NumPy: masks by np.percentile, (scalar * mask).mean()."""
    p_t = soft(weak_t, 1.0)
    confidence = p_t.max(axis=1)
    mask = confidence <= np.percentile(confidence, 50)
    class_confidence = p_t.sum(axis=0)
    class_mask = class_confidence <= np.percentile(class_confidence, 50)
    instance_weak = sum((kd_reference(weak_s, weak_t, t, standardize) * mask).mean() for t in temperatures)
    instance_strong = (sum(kd_reference(strong_s, strong_t, t, standardize) for t in temperatures[:3])
                       + sum(kd_reference(weak_s, weak_t, t, standardize) for t in temperatures[3:]))
    class_level = sum((cc_reference(weak_s, weak_t, t) * class_mask).mean() for t in temperatures)
    batch_level = sum((bc_reference(weak_s, weak_t, t) * mask).mean() for t in temperatures)
    return instance_weak + instance_strong + class_level + batch_level


def logits(seed: int, batch: int = 6, classes: int = 5, scale: float = 2.0) -> np.ndarray:
    return scale * np.random.default_rng(seed).standard_normal((batch, classes))


# ---------------------------------------------------------------- the levels
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_class_and_batch_levels_match_float64_loops(temperature: float) -> None:
    y_s, y_t = logits(1), logits(2, scale=3.0)
    student, teacher = torch.tensor(y_s), torch.tensor(y_t)
    assert cc_loss(student, teacher, temperature).item() == pytest.approx(cc_reference(y_s, y_t, temperature), rel=TOL)
    assert bc_loss(student, teacher, temperature).item() == pytest.approx(bc_reference(y_s, y_t, temperature), rel=TOL)
    assert cc_loss(teacher, teacher, temperature).item() == 0.0 and bc_loss(teacher, teacher, temperature).item() == 0.0


@pytest.mark.parametrize("batch", [6, 7])
def test_confidence_shares_equal_the_official_masks(batch: int) -> None:
    y_t = logits(3, batch=batch, classes=9)
    sample_share, class_share = confidence_shares(torch.tensor(y_t))
    p_t = soft(y_t, 1.0)
    confidence, class_confidence = p_t.max(axis=1), p_t.sum(axis=0)
    assert sample_share.item() == pytest.approx(np.mean(confidence <= np.percentile(confidence, 50)), rel=1e-7)
    assert class_share.item() == pytest.approx(np.mean(class_confidence <= np.percentile(class_confidence, 50)),
                                               rel=1e-7)
    assert sample_share.item() == pytest.approx(4 / 7 if batch == 7 else 0.5) and class_share.item() == pytest.approx(5 / 9)


@pytest.mark.parametrize("temperatures,standardize", [(TEMPERATURES, False), ((2.0, 3.0, 5.0, 2.0, 6.0), True)])
def test_multi_level_loss_matches_the_official_formula(temperatures: tuple, standardize: bool) -> None:
    arrays = [logits(4), logits(5, scale=3.0), logits(6), logits(7, scale=3.0)]
    value = multi_level_loss(*(torch.tensor(a) for a in arrays), temperatures, standardize)
    assert value.item() == pytest.approx(official_reference(*arrays, temperatures, standardize), rel=TOL)


def test_multi_level_loss_gradcheck() -> None:
    weak_s = torch.tensor(logits(8, batch=4, classes=4), requires_grad=True)
    strong_s = torch.tensor(logits(9, batch=4, classes=4), requires_grad=True)
    weak_t, strong_t = torch.tensor(logits(10, 4, 4, scale=3.0)), torch.tensor(logits(11, 4, 4, scale=3.0))
    assert torch.autograd.gradcheck(lambda w, s: multi_level_loss(w, weak_t, s, strong_t, TEMPERATURES), (weak_s, strong_s))
    assert torch.autograd.gradcheck(lambda w, s: multi_level_loss(w, weak_t, s, strong_t, TEMPERATURES, True),
                                    (weak_s, strong_s))


# ---------------------------------------------------------------- the views
def tiny_data(count: int = 32) -> ImageData:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.arange(count) % 10
    return ImageData("tiny", 10, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), images, labels, images[:16], labels[:16])


@pytest.mark.parametrize("loader", ["fast", "classic"])
def test_strong_view_differs_from_weak_with_same_shape_dtype_and_labels(loader: str) -> None:
    data = tiny_data()
    extra = {"num_workers": 0} if loader == "classic" else {}
    two, test = make_loaders(data, 8, "cpu", loader=loader, seed=3, views=("weak", "strong"), **extra)
    one, _ = make_loaders(data, 8, "cpu", loader=loader, seed=3, **extra)
    batches, singles = list(two.iterate(2)), list(one.iterate(2))
    assert len(batches) == len(two) == 4
    for (images, labels, index), (single, single_labels, single_index) in zip(batches, singles):
        weak, strong = images
        assert weak.shape == strong.shape == (8, 3, 32, 32) and weak.dtype == strong.dtype == torch.float32
        assert torch.equal(weak, single)  # asking for the strong view leaves the weak view as it was
        assert torch.equal(labels, single_labels) and torch.equal(index, single_index)
        assert torch.equal(labels, data.train_labels[index])
        assert (weak != strong).float().mean() > 0.2
    resumed = list(two.iterate(2, start_step=2))
    for (images, _, index), (again, _, again_index) in zip(batches[2:], resumed):
        assert torch.equal(images[1], again[1]) and torch.equal(index, again_index)
    assert not torch.equal(batches[0][0][1], next(iter(two.iterate(3)))[0][1])  # new draws every epoch
    assert isinstance(next(iter(test.iterate(0)))[0], torch.Tensor)  # the test split has one view


def test_fast_strong_view_is_the_documented_recipe() -> None:
    """The strong batch equals crop + flip + RandAugment + Cutout at the epoch generator's draws."""
    data = tiny_data()
    train, _ = make_loaders(data, 16, "cpu", seed=5, views=("weak", "strong"))
    (_, strong), _, index = next(iter(train.iterate(1)))
    generator = epoch_generator(5, 1)
    order = torch.randperm(32, generator=generator)
    torch.randint(0, 9, (32, 2), generator=generator)  # the weak view's draws come first
    torch.rand(32, generator=generator)
    params = draw_strong_params(32, generator)
    assert torch.equal(index, order[:16])
    pixels = strong_view(data.train_images[index], params[torch.arange(16)])
    mean, std = torch.tensor(data.mean).view(1, 3, 1, 1), torch.tensor(data.std).view(1, 3, 1, 1)
    assert torch.equal(strong, normalize(pixels, mean, std))
    plain = random_crop_flip(data.train_images[index], params.offsets[:16], params.flips[:16])
    assert not torch.equal(pixels, plain)


def test_imagenet_rejects_a_second_view() -> None:
    from dataset.build import build_data

    opt = argparse.Namespace(dataset="imagenet", distill="mlkd", data_folder="unused")
    with pytest.raises(UserError, match="--distill mlkd"):
        build_data(opt, torch.device("cpu"), views=("weak", "strong"))


# ---------------------------------------------------------------- training step and end to end
def test_step_sums_ce_over_views_and_hands_the_strong_view_to_the_loss() -> None:
    torch.manual_seed(0)
    student, teacher = model_dict["resnet8"](num_classes=10), model_dict["resnet8"](num_classes=10).eval()
    opt = argparse.Namespace(kd_T=4.0, logit_stand=False)
    method = METHODS["mlkd"](DistillContext(opt, student, teacher, [], [], torch.arange(10), torch.device("cpu")))
    task = DistillTask(student, teacher, method, 0.1, 0.0, 0.9, 4.0)
    task.train_mode()
    weak, strong = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    labels = torch.arange(8)
    output = task.compute((weak, strong), labels, torch.arange(8))
    with torch.no_grad():
        weak_logits, strong_logits = student(weak), student(strong)
        weak_teacher, strong_teacher = teacher(weak), teacher(strong)
    expected_ce = F.cross_entropy(weak_logits, labels) + F.cross_entropy(strong_logits, labels)
    torch.testing.assert_close(output.losses["ce"], expected_ce)
    expected = multi_level_loss(weak_logits, weak_teacher, strong_logits, strong_teacher, TEMPERATURES)
    torch.testing.assert_close(output.losses["mlkd"], expected)
    torch.testing.assert_close(output.total, 0.1 * expected_ce + 0.9 * expected)
    torch.testing.assert_close(output.logits, weak_logits)
    with pytest.raises(ValueError, match="views"):
        task.compute(weak, labels, torch.arange(8))


@pytest.mark.slow
def test_one_epoch_end_to_end(cifar_folder: Path, tmp_path: Path) -> None:
    teacher = write_published_teacher(tmp_path / "save", "resnet8")
    argv = ["--path_t", str(teacher), "--distill", "mlkd", "--model_s", "resnet8", "--epochs", "1", "--batch_size",
            "16", "--data_folder", str(cifar_folder), "--save_folder", str(tmp_path / "out"), "--device", "cpu",
            "--no_progress"]
    train_student.main(argv)
    opt = train_student.parse_args(argv)
    assert (opt.gamma, opt.alpha, opt.beta, opt.kd_T) == (0.1, 0.0, 0.9, 4.0)
    run_dir = tmp_path / "out" / "student" / "student_model" / train_student.run_name(opt)
    with open(run_dir / "metrics.csv") as handle:
        row = next(csv.DictReader(handle))
    assert math.isfinite(float(row["mlkd"])) and float(row["mlkd"]) > 0 and math.isfinite(float(row["ce"]))
    state = torch.load(run_dir / "resnet8_last.pth", weights_only=True)
    assert int(state["model"]["bn1.num_batches_tracked"]) == 2 * (500 // 16)  # the student saw both views


def test_defaults_and_resnet32x4_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    teacher = write_published_teacher(tmp_path / "save", "resnet32x4")
    opt = train_student.parse_args(["--path_t", str(teacher.relative_to(tmp_path)), "--distill", "mlkd",
                                    "--model_s", "resnet8x4", "--trial", "1"])
    assert (opt.model_t, opt.gamma, opt.alpha, opt.beta, opt.logit_stand) == ("resnet32x4", 0.1, 0.0, 0.9, False)
    method = METHODS["mlkd"]
    assert method.display_name == "MLKD" and not method.uses_features and method.views == ("weak", "strong")
