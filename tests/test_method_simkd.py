"""SimKD (distiller_zoo/simkd.py): projector shapes, loss and prediction against a float64 NumPy
re-derivation, gradients, the frozen teacher classifier, the deployed network and its checkpoints."""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training import student as train_student
from training import transfer as transfer_student
from dataset.build import build_data
from distiller_zoo import METHODS, DistillContext, DistillTask, Features, SimKD, deployed_from_checkpoint
from helper.checkpoint import load_checkpoint, load_weights
from helper.loop import train_step, validate
from helpers import adaptive_pool, assert_same_run, run_script, train_straight_and_resumed, write_published_teacher
from models import get_classifier, model_dict

TOL = 1e-5


def make_method(teacher_arch: str, student_arch: str, factor: int = 2, dtype: torch.dtype = torch.float32):
    """(method, student, teacher) for a pair, built as train_student.build_models does (CPU, 32 px)."""
    student = model_dict[student_arch](num_classes=100).to(dtype)
    teacher = model_dict[teacher_arch](num_classes=100).to(dtype).eval().requires_grad_(False)
    device = torch.device("cpu")
    shapes_s = train_student.feature_shapes(student.float(), False, device)
    shapes_t = train_student.feature_shapes(teacher.float(), False, device)
    student.to(dtype), teacher.to(dtype)
    opt = argparse.Namespace(simkd_factor=factor)
    context = DistillContext(opt, student, teacher, shapes_s, shapes_t, torch.arange(100), device)
    return METHODS["simkd"](context).to(dtype), student, teacher


def forward_both(student, teacher, images: torch.Tensor) -> Features:
    feats_s, logits_s = student(images, is_feat=True)
    with torch.no_grad():
        feats_t, logits_t = teacher(images, is_feat=True)
    labels = torch.zeros(images.shape[0], dtype=torch.long)
    return Features(feats_s, feats_t, logits_s, logits_t, labels, labels)


# ---------------------------------------------------------------- shapes
@pytest.mark.parametrize("teacher_arch,student_arch,channels,size", [
    ("resnet32x4", "resnet8x4", 256, 8),    # same family, same 8x8 maps
    ("resnet32x4", "ShuffleV2", 256, 4),    # student 464 ch at 4x4: teacher map pooled 8 -> 4
    ("vgg13", "MobileNetV2", 512, 2),       # student 160 ch at 2x2: teacher map pooled 4 -> 2
    ("wrn_40_2", "wrn_16_2", 128, 8),       # teacher map = its final BN-ReLU of feats[-2]
])
def test_projector_shapes(teacher_arch: str, student_arch: str, channels: int, size: int) -> None:
    method, student, teacher = make_method(teacher_arch, student_arch)
    student.eval()
    method.eval()
    features = forward_both(student, teacher, torch.randn(2, 3, 32, 32))
    s_n = features.student[-2].shape[1]
    assert method.projector.transfer[0].weight.shape == (channels // 2, s_n, 1, 1)
    assert method.projector.transfer[6].weight.shape == (channels, channels // 2, 1, 1)
    trans_feat_s, trans_feat_t, pred_feat_s = method.projector(features.student[-2], method.teacher_map(
        features.teacher), method.teacher_classifier)
    assert trans_feat_s.shape == trans_feat_t.shape == (2, channels, size, size)
    assert pred_feat_s.shape == (2, 100)


@pytest.mark.parametrize("teacher_arch,student_arch", [("vgg13", "resnet8x4"), ("wrn_16_2", "MobileNetV2")])
def test_deployed_network_predicts_as_in_training(teacher_arch: str, student_arch: str) -> None:
    """SimKDStudent(images) equals the prediction the loss computes (student map pooled 8 -> 4 for
    resnet8x4 under vgg13; teacher map pooled for MobileNetV2), in eval mode."""
    method, student, teacher = make_method(teacher_arch, student_arch)
    student.eval()
    method.eval()
    images = torch.randn(3, 3, 32, 32)
    features = forward_both(student, teacher, images)
    method.loss(features)
    deployed = method.deployed_model(student)
    torch.testing.assert_close(deployed(images), features.deployed_logits, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- loss against float64 NumPy
def batch_norm_relu(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Training-mode BatchNorm (batch mean, biased variance over B, H, W) followed by ReLU."""
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = ((x - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
    y = (x - mean) / np.sqrt(var + eps) * weight[None, :, None, None] + bias[None, :, None, None]
    return np.maximum(y, 0.0)


def conv(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Bias-free stride-1 convolution with 'same' zero padding, by explicit loops over the kernel."""
    kernel = weight.shape[2]
    pad = kernel // 2
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    height, width = x.shape[2:]
    out = np.zeros((x.shape[0], weight.shape[0], height, width))
    for di in range(kernel):
        for dj in range(kernel):
            window = padded[:, :, di:di + height, dj:dj + width]
            out += np.einsum("oc,bchw->bohw", weight[:, :, di, dj], window)
    return out


def simkd_reference(feat_s: np.ndarray, feat_t: np.ndarray, projector: SimKD, cls_w: np.ndarray,
                    cls_b: np.ndarray) -> tuple[float, np.ndarray]:
    """SimKD from the paper / official code: pool the larger map to the smaller's size, project the
    student's (conv1x1-BN-ReLU, conv3x3-BN-ReLU, conv1x1-BN-ReLU), MSE to the teacher's; the prediction
    is the teacher classifier on the spatial mean of the projected map."""
    if feat_s.shape[2] > feat_t.shape[2]:
        feat_s = adaptive_pool(feat_s, *feat_t.shape[2:])
    elif feat_s.shape[2] < feat_t.shape[2]:
        feat_t = adaptive_pool(feat_t, *feat_s.shape[2:])
    layers = projector.transfer
    x = feat_s
    for conv_index in (0, 3, 6):
        norm = layers[conv_index + 1]
        x = batch_norm_relu(conv(x, layers[conv_index].weight.detach().double().numpy()),
                            norm.weight.detach().double().numpy(), norm.bias.detach().double().numpy())
    loss = float(((x - feat_t) ** 2).mean())
    prediction = x.mean(axis=(2, 3)) @ cls_w.T + cls_b
    return loss, prediction


@pytest.mark.parametrize("student_size,teacher_size", [(4, 2), (2, 4), (3, 3)])
def test_projector_loss_and_prediction_match_float64_reference(student_size: int, teacher_size: int) -> None:
    rng = np.random.default_rng(student_size * 10 + teacher_size)
    projector = SimKD(s_n=5, t_n=6, factor=2).double().train()
    for norm in (projector.transfer[1], projector.transfer[4], projector.transfer[7]):
        norm.weight.data = torch.tensor(rng.uniform(0.5, 1.5, norm.weight.shape))
        norm.bias.data = torch.tensor(rng.normal(0.0, 0.5, norm.bias.shape))
    classifier = torch.nn.Linear(6, 7).double()
    feat_s = rng.normal(size=(4, 5, student_size, student_size))
    feat_t = np.maximum(rng.normal(size=(4, 6, teacher_size, teacher_size)), 0.0)
    trans_s, trans_t, prediction = projector(torch.tensor(feat_s), torch.tensor(feat_t), classifier)
    loss = F.mse_loss(trans_s, trans_t)
    ref_loss, ref_prediction = simkd_reference(feat_s, feat_t, projector, classifier.weight.detach().numpy(),
                                               classifier.bias.detach().numpy())
    assert loss.item() == pytest.approx(ref_loss, rel=TOL)
    np.testing.assert_allclose(prediction.detach().numpy(), ref_prediction, rtol=TOL, atol=1e-12)


def test_method_loss_matches_float64_reference() -> None:
    """``loss()`` of the registered method on real resnet8 features (float64) equals the reference."""
    method, student, teacher = make_method("resnet8", "resnet8", dtype=torch.float64)
    features = forward_both(student, teacher, torch.randn(4, 3, 32, 32, dtype=torch.float64))
    loss = method.loss(features)
    cls = method.teacher_classifier
    ref_loss, ref_prediction = simkd_reference(features.student[-2].detach().numpy(), features.teacher[-2].numpy(),
                                               method.projector, cls.weight.numpy(), cls.bias.numpy())
    assert loss.item() == pytest.approx(ref_loss, rel=TOL)
    np.testing.assert_allclose(features.deployed_logits.detach().numpy(), ref_prediction, rtol=TOL, atol=1e-12)
    assert torch.equal(cls.weight, get_classifier(teacher).weight)  # a copy of the teacher's own


def test_gradient_matches_finite_differences() -> None:
    projector = SimKD(s_n=3, t_n=4, factor=2).double().train()
    classifier = torch.nn.Linear(4, 5).double()
    feat_s = torch.randn(3, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    feat_t = torch.randn(3, 4, 2, 2, dtype=torch.float64)

    def simkd_loss(student_map: torch.Tensor) -> torch.Tensor:
        trans_s, trans_t, _ = projector(student_map, feat_t, classifier)
        return F.mse_loss(trans_s, trans_t)

    assert torch.autograd.gradcheck(simkd_loss, (feat_s,), eps=1e-6, atol=1e-6)


def test_factor_and_flag() -> None:
    method, _, _ = make_method("resnet8", "resnet8", factor=4)
    assert method.projector.transfer[0].weight.shape == (16, 64, 1, 1)
    with pytest.raises(Exception, match="--simkd_factor 65"):
        make_method("resnet8", "resnet8", factor=65)
    cls = METHODS["simkd"]
    assert (cls.display_name, cls.default_gamma, cls.default_alpha, cls.default_beta) == ("SimKD", 0.0, 0.0, 1.0)


# ---------------------------------------------------------------- frozen teacher classifier
def test_teacher_classifier_stays_frozen_through_training_steps() -> None:
    method, student, teacher = make_method("resnet8", "resnet8")
    task = DistillTask(student, teacher, method, gamma=0.0, alpha=0.0, beta=1.0, kd_T=4.0)
    params = [*student.parameters(), *method.trainable_parameters()]
    assert not any(p is q for p in params for q in method.teacher_classifier.parameters())
    optimizer = torch.optim.SGD(params, lr=0.5, momentum=0.9, weight_decay=5e-4)
    frozen = {k: v.clone() for k, v in method.teacher_classifier.state_dict().items()}
    teacher_head = {k: v.clone() for k, v in get_classifier(teacher).state_dict().items()}
    projector = method.projector.transfer[0].weight.detach().clone()
    task.train_mode()
    for _ in range(2):
        output = train_step(task, optimizer, torch.randn(8, 3, 32, 32), torch.arange(8), torch.arange(8))
    assert output.logits is not None and output.logits.shape == (8, 100)
    for key, value in method.teacher_classifier.state_dict().items():
        assert torch.equal(value, frozen[key]), key
    for key, value in get_classifier(teacher).state_dict().items():
        assert torch.equal(value, teacher_head[key]), key
    assert not torch.equal(method.projector.transfer[0].weight, projector)


# ---------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_published_teacher(tmp_path_factory.mktemp("teacher_save"), "resnet8")


def simkd_argv(teacher: Path, data: Path, save: Path, epochs: int, *extra: str) -> list[str]:
    return ["--path_t", str(teacher), "--distill", "simkd", "--model_s", "resnet8", "--epochs", str(epochs),
            "--lr_decay_epochs", "1", "--batch_size", "64", "--data_folder", str(data), "--save_folder", str(save),
            "--device", "cpu", "--no_progress", "--seed", "3", *extra]


@pytest.mark.slow
def test_best_checkpoint_reevaluates_and_is_accepted(teacher_path: Path, cifar_folder: Path, stl10_folder: Path,
                                                     tmp_path: Path) -> None:
    argv = simkd_argv(teacher_path, cifar_folder, tmp_path, 1, "--trial", "1")
    best = train_student.main(argv)
    (run_dir,) = (tmp_path / "student" / "student_model").iterdir()
    with open(run_dir / "metrics.csv") as handle:
        logged = max(float(row["test_acc1"]) for row in csv.DictReader(handle))
    state = load_checkpoint(run_dir / "resnet8_best.pth")
    assert state["arch"] == "resnet8" and state["best_acc"] == best == logged
    assert sorted(state["deployed"]) == ["classifier", "factor", "method", "projector", "student_channels",
                                         "teacher_channels", "teacher_size"]
    student = model_dict["resnet8"](num_classes=100)
    load_weights(student, state, run_dir, "resnet8", "test")  # 'model' is the bare student
    deployed = deployed_from_checkpoint(student, state)
    opt = train_student.parse_args(argv)
    _, _, test_loader = build_data(opt, torch.device("cpu"))
    assert validate(deployed, test_loader)["test_acc1"] == logged

    result = run_script("scripts/verify_checkpoint.py", str(run_dir / "resnet8_best.pth"), "resnet8", cwd=tmp_path)
    assert "of the deployed SimKD network" in result.stdout
    transfer_student.main(["--path_s", str(run_dir / "resnet8_best.pth"), "--model_s", "resnet8", "--dataset",
                           "stl10", "--epochs", "1", "--batch_size", "16", "--data_folder", str(stl10_folder),
                           "--save_folder", str(tmp_path / "transfer_save"), "--device", "cpu", "--no_progress"])
    assert list((tmp_path / "transfer_save" / "transfer" / "transfer_model").iterdir())


@pytest.mark.slow
def test_resume_is_bit_identical(teacher_path: Path, cifar_folder: Path, tmp_path: Path) -> None:
    run_a, run_b = train_straight_and_resumed(
        lambda save, *rest: simkd_argv(teacher_path, cifar_folder, save, *rest), tmp_path)
    assert_same_run(run_a, run_b)  # weights, method state, metrics
    state_a, state_b = (torch.load(run / "resnet8_last.pth", weights_only=True) for run in (run_a, run_b))
    for key, value in state_a["deployed"]["projector"].items():
        assert torch.equal(value, state_b["deployed"]["projector"][key]), key


@pytest.mark.slow
def test_cross_architecture_pair_trains(cifar_folder: Path, tmp_path: Path) -> None:
    """A WRN teacher (its map is the final BN-ReLU of feats[-2], 8x8) into a MobileNetV2 (2x2 maps)."""
    teacher = write_published_teacher(tmp_path / "teachers", "wrn_16_1")
    train_student.main(["--path_t", str(teacher), "--distill", "simkd", "--model_s", "MobileNetV2", "--epochs", "1",
                        "--batch_size", "64", "--data_folder", str(cifar_folder), "--save_folder", str(tmp_path),
                        "--device", "cpu", "--no_progress"])
    (run_dir,) = (tmp_path / "student" / "student_model").iterdir()
    state = load_checkpoint(run_dir / "MobileNetV2_last.pth")
    assert state["deployed"]["teacher_size"] == [8, 8] and state["deployed"]["teacher_channels"] == 64
