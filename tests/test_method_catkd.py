"""CAT-KD (distiller_zoo/catkd.py): class activation maps against explicit float64 sums, the pooled
size, the CAT loss against a float64 NumPy re-derivation, gradients, and a cross-architecture run."""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training import student as train_student
from distiller_zoo import CAT_loss, METHODS, DistillContext, Features, class_activation_maps
from helpers import adaptive_pool, numeric_gradient, torch_value_and_grad, write_published_teacher
from models import get_classifier, model_dict

TOL = 1e-5


def cam_reference(feature_map: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """CAM[b, k, x, y] = sum_c W[k, c] * F[b, c, x, y], by explicit loops over classes and channels."""
    batch, channels, height, width = feature_map.shape
    cams = np.zeros((batch, weight.shape[0], height, width))
    for k in range(weight.shape[0]):
        for c in range(channels):
            cams[:, k] += weight[k, c] * feature_map[:, c]
    return cams


def cat_reference(cam_s: np.ndarray, cam_t: np.ndarray, resolution: int, normalize: bool) -> float:
    """CAT from the paper (eq. 4) / official code: pool to resolution^2, L2-normalise each map over its
    cells (max(norm, 1e-12), as F.normalize) when asked, mean of squared differences over all elements."""
    pooled = [adaptive_pool(cam, resolution, resolution) for cam in (cam_s, cam_t)]
    if normalize:
        for index, cam in enumerate(pooled):
            norms = np.sqrt((cam ** 2).sum(axis=(2, 3), keepdims=True))
            pooled[index] = cam / np.maximum(norms, 1e-12)
    return float(((pooled[0] - pooled[1]) ** 2).sum() / pooled[0].size)


# ---------------------------------------------------------------- class activation maps
def test_cams_match_explicit_float64_sums() -> None:
    rng = np.random.default_rng(0)
    feature_map, weight = rng.normal(size=(2, 5, 3, 4)), rng.normal(size=(7, 5))
    cams = class_activation_maps(torch.tensor(feature_map), torch.tensor(weight))
    np.testing.assert_allclose(cams.numpy(), cam_reference(feature_map, weight), rtol=TOL, atol=1e-12)


@pytest.mark.parametrize("arch", ["resnet8", "vgg8", "wrn_16_1", "MobileNetV2", "ShuffleV2"])
def test_network_cams_from_feats_and_fc_weights(arch: str) -> None:
    """From feats[-2] (or, for WRN / MobileNetV2 / ShuffleV2, the layers after it up to the pool) and the
    linear layer's weights: the explicit sum, and spatial mean + bias = the network's logits."""
    from distiller_zoo.catkd import network_cams

    model = model_dict[arch](num_classes=10).eval()
    with torch.no_grad():
        feats, logits = model(torch.randn(2, 3, 32, 32), is_feat=True)
        cams = network_cams(model, feats)
    head = get_classifier(model)
    if arch in ("resnet8", "vgg8"):
        reference = cam_reference(feats[-2].double().numpy(), head.weight.detach().double().numpy())
        np.testing.assert_allclose(cams.double().numpy(), reference, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cams.mean(dim=(2, 3)) + head.bias, logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size,resolution", [((8, 8), 2), ((4, 4), 4), ((8, 8), 1), ((2, 2), 4)])
def test_pooled_size(size: tuple[int, int], resolution: int) -> None:
    cams = torch.randn(3, 6, *size)
    pooled = F.adaptive_avg_pool2d(cams, resolution)
    assert pooled.shape == (3, 6, resolution, resolution)
    np.testing.assert_allclose(pooled.numpy(), adaptive_pool(cams.numpy().astype(np.float64), resolution, resolution),
                               rtol=TOL, atol=1e-6)


# ---------------------------------------------------------------- the CAT loss
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("student_size,teacher_size,resolution", [(8, 8, 2), (4, 8, 4), (2, 4, 2), (8, 8, 3)])
def test_cat_loss_matches_float64_reference(normalize: bool, student_size: int, teacher_size: int,
                                            resolution: int) -> None:
    rng = np.random.default_rng(student_size + teacher_size + resolution)
    cam_s = rng.normal(size=(3, 5, student_size, student_size))
    cam_t = rng.normal(size=(3, 5, teacher_size, teacher_size))
    value = CAT_loss(torch.tensor(cam_s), torch.tensor(cam_t), resolution, normalize).item()
    assert value == pytest.approx(cat_reference(cam_s, cam_t, resolution, normalize), rel=TOL)


@pytest.mark.parametrize("normalize", [False, True])
def test_cat_loss_gradient(normalize: bool) -> None:
    rng = np.random.default_rng(1)
    cam_s, cam_t = rng.normal(size=(2, 2, 4, 4)), rng.normal(size=(2, 2, 8, 8))
    value, grad = torch_value_and_grad(lambda s, t: CAT_loss(s, t, 2, normalize), cam_s, torch.tensor(cam_t))
    reference = numeric_gradient(lambda s: cat_reference(s, cam_t, 2, normalize), cam_s)
    assert value == pytest.approx(cat_reference(cam_s, cam_t, 2, normalize), rel=TOL)
    np.testing.assert_allclose(grad, reference, rtol=1e-5, atol=1e-8)
    student = torch.tensor(cam_s, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: CAT_loss(s, torch.tensor(cam_t), 2, normalize), (student,))


# ---------------------------------------------------------------- the method
def make_method(teacher_arch: str, student_arch: str, **flags):
    student = model_dict[student_arch](num_classes=100).double()
    teacher = model_dict[teacher_arch](num_classes=100).double().eval().requires_grad_(False)
    opt = argparse.Namespace(**{"cat_resolution": 2, "cat_normalize": False, **flags})
    context = DistillContext(opt, student, teacher, [], [], torch.arange(100), torch.device("cpu"))
    return METHODS["catkd"](context), student, teacher


@pytest.mark.parametrize("normalize", [False, True])
def test_method_loss_matches_reference_on_real_features(normalize: bool) -> None:
    method, student, teacher = make_method("resnet8", "resnet8x4", cat_normalize=normalize)
    images = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    feats_s, logits_s = student(images, is_feat=True)
    with torch.no_grad():
        feats_t, logits_t = teacher(images, is_feat=True)
    labels = torch.zeros(3, dtype=torch.long)
    loss = method.loss(Features(feats_s, feats_t, logits_s, logits_t, labels, labels))
    cam_s = cam_reference(feats_s[-2].detach().numpy(), get_classifier(student).weight.detach().numpy())
    cam_t = cam_reference(feats_t[-2].numpy(), get_classifier(teacher).weight.numpy())
    assert loss.item() == pytest.approx(cat_reference(cam_s, cam_t, 2, normalize), rel=TOL)
    loss.backward()
    assert get_classifier(student).weight.grad is not None  # the CAMs train the student's classifier too
    assert list(method.state_dict()) == [] and method.trainable_parameters() == []  # nothing to resume


def test_defaults_and_official_hint(capsys: pytest.CaptureFixture[str]) -> None:
    cls = METHODS["catkd"]
    assert (cls.display_name, cls.default_gamma, cls.default_alpha, cls.default_beta) == ("CAT-KD", 1.0, 0.0, 15.0)
    make_method("resnet8", "resnet8", model_t="resnet32x4", model_s="ShuffleV2", beta=15.0)
    assert "-b 600 --cat_resolution 4 --cat_normalize" in capsys.readouterr().out
    make_method("resnet8", "resnet8", model_t="resnet32x4", model_s="resnet8x4", beta=15.0)
    assert capsys.readouterr().out == ""


@pytest.mark.slow
def test_cross_architecture_pair_trains(cifar_folder: Path, tmp_path: Path) -> None:
    """A WRN teacher into a MobileNetV2: both CAMs come from the layers after feats[-2] (8x8 vs 2x2)."""
    teacher = write_published_teacher(tmp_path / "teachers", "wrn_16_1")
    train_student.main(["--path_t", str(teacher), "--distill", "catkd", "--model_s", "MobileNetV2", "--epochs", "1",
                        "--batch_size", "64", "--cat_normalize", "--data_folder", str(cifar_folder),
                        "--save_folder", str(tmp_path), "--device", "cpu", "--no_progress"])
    (run_dir,) = (tmp_path / "student" / "student_model").iterdir()
    assert run_dir.name == "catkd_cifar100_S_MobileNetV2_T_wrn_16_1_r_1_a_0_b_15_trial_1"
    with open(run_dir / "metrics.csv") as handle:
        row = next(csv.DictReader(handle))
    assert float(row["catkd"]) > 0 and 0 <= float(row["test_acc1"]) <= 100
