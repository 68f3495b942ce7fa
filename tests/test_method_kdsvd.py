"""KDSVD (Lee et al., ECCV 2018, as RepDistiller ships it) against a float64 NumPy re-derivation.

The reference below is written from the paper / RepDistiller's formula with explicit loops over
samples and channels, on NumPy's SVD. A singular vector's sign is arbitrary (each LAPACK build may
choose differently), and the loss depends on the relative sign of the teacher's vectors of
consecutive maps; the reference therefore takes the teacher vectors' signs as given (read off the
code's own SVD helper), and everything else (student alignment, kernels, sums) independently.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from training import student as train_student
from datagen import write_cifar100
from distiller_zoo import KDSVD, METHODS, DistillContext
from helpers import numeric_gradient, write_published_teacher
from helper.errors import UserError
from models import model_dict

TOL = 1e-5


def random_maps(shapes: list[tuple[int, ...]], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for shape in shapes]


def top_right_vectors(feature: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: the ``count`` leading right singular vectors (B, count, C) of the (H*W, C) matrix
    and the singular values (B, count), from NumPy."""
    batch, channels = feature.shape[:2]
    vectors, values = [], []
    for b in range(batch):
        matrix = feature[b].reshape(channels, -1).T  # (H*W, C): rows are positions
        _, singular, right_transposed = np.linalg.svd(matrix, full_matrices=False)
        vectors.append(right_transposed[:count])
        values.append(singular[:count])
    return np.stack(vectors), np.stack(values)


def kdsvd_reference(g_s: list[np.ndarray], g_t: list[np.ndarray], teacher_signs: list[np.ndarray],
                    k: int = 1) -> list[float]:
    """Sum over samples, channels c of map i and c' of map i-1, kept vectors j of
    (exp(-(vs_i[c]-vs_{i-1}[c'])^2/8) - exp(-(vt_i[c]-vt_{i-1}[c'])^2/8))^2, divided by B; vt are the
    teacher's top-k right singular vectors times their L2-normalised singular values, vs the
    student's top-(k+3) vector most aligned with each (sign matched), times the same value."""
    batch = g_s[0].shape[0]
    aligned_s, aligned_t = [], []
    for f_s, f_t, signs in zip(g_s, g_t, teacher_signs):
        teacher_vectors, teacher_values = top_right_vectors(f_t, k)
        student_vectors, _ = top_right_vectors(f_s, k + 3)
        layer_s = np.zeros((batch, f_s.shape[1], k))
        layer_t = np.zeros((batch, f_t.shape[1], k))
        for b in range(batch):
            weights = teacher_values[b] / np.linalg.norm(teacher_values[b])
            for j in range(k):
                v_t = teacher_vectors[b, j] * signs[b, j]
                cosines = [float(v @ v_t) for v in student_vectors[b]]
                best = int(np.argmax(np.abs(cosines)))
                layer_t[b, :, j] = v_t * weights[j]
                layer_s[b, :, j] = np.sign(cosines[best]) * student_vectors[b, best] * weights[j]
        aligned_s.append(layer_s)
        aligned_t.append(layer_t)
    losses = []
    for i in range(1, len(g_s)):
        total = 0.0
        for b in range(batch):
            for j in range(k):
                for c in range(aligned_s[i].shape[1]):
                    for c_prev in range(aligned_s[i - 1].shape[1]):
                        kernel_s = np.exp(-(aligned_s[i][b, c, j] - aligned_s[i - 1][b, c_prev, j]) ** 2 / 8)
                        kernel_t = np.exp(-(aligned_t[i][b, c, j] - aligned_t[i - 1][b, c_prev, j]) ** 2 / 8)
                        total += (kernel_s - kernel_t) ** 2
        losses.append(total / batch)
    return losses


def code_teacher_signs(g_t: list[np.ndarray], k: int = 1) -> list[np.ndarray]:
    """+1/-1 per sample and kept vector: the sign of the code's teacher vectors relative to NumPy's."""
    signs = []
    for f_t in g_t:
        _, _, code_vectors = KDSVD().svd(torch.tensor(f_t), k)        # (B, C, k)
        numpy_vectors, _ = top_right_vectors(f_t, k)                   # (B, k, C)
        dots = np.einsum("bcj,bjc->bj", code_vectors.numpy(), numpy_vectors)
        assert np.allclose(np.abs(dots), 1, atol=1e-8), dots           # same vectors up to sign
        signs.append(np.sign(dots))
    return signs


def code_losses(g_s: list[np.ndarray], g_t: list[np.ndarray]) -> list[float]:
    losses = KDSVD()([torch.tensor(f) for f in g_s], [torch.tensor(f) for f in g_t])
    return [loss.item() for loss in losses]


@pytest.mark.parametrize("student_shapes,teacher_shapes", [
    ([(3, 4, 4, 4), (3, 6, 3, 3), (3, 5, 2, 2)], [(3, 4, 4, 4), (3, 6, 3, 3), (3, 5, 2, 2)]),
    ([(2, 3, 5, 5), (2, 7, 2, 2)], [(2, 3, 3, 3), (2, 7, 4, 4)]),   # spatial sizes may differ
    ([(2, 8, 2, 2), (2, 6, 1, 1)], [(2, 8, 3, 3), (2, 6, 2, 2)]),   # fewer positions than channels
])
def test_value_matches_float64_reference(student_shapes: list, teacher_shapes: list) -> None:
    g_s, g_t = random_maps(student_shapes, seed=1), random_maps(teacher_shapes, seed=2)
    expected = kdsvd_reference(g_s, g_t, code_teacher_signs(g_t))
    got = code_losses(g_s, g_t)
    assert len(got) == len(g_s) - 1  # one loss per pair of consecutive maps, as RepDistiller
    np.testing.assert_allclose(got, expected, rtol=TOL)


def test_list_length_is_consecutive_pairs_and_identities() -> None:
    g_t = random_maps([(2, 4, 3, 3), (2, 5, 3, 3), (2, 6, 2, 2), (2, 3, 2, 2)], seed=3)
    g_s = random_maps([(2, 4, 3, 3), (2, 5, 3, 3), (2, 6, 2, 2), (2, 3, 2, 2)], seed=4)
    assert len(code_losses(g_s, g_t)) == 3
    assert code_losses(g_t, g_t) == [0.0, 0.0, 0.0]      # student == teacher: identical kernels
    flipped = [g_s[0], -g_s[1], g_s[2], -g_s[3]]         # the student's SVD signs do not matter
    np.testing.assert_allclose(code_losses(flipped, g_t), code_losses(g_s, g_t), rtol=1e-12)


def test_gradient_matches_finite_differences() -> None:
    g_s = random_maps([(2, 3, 3, 3), (2, 4, 2, 2)], seed=5)
    g_t = [torch.tensor(f) for f in random_maps([(2, 3, 3, 3), (2, 4, 2, 2)], seed=6)]
    first = torch.tensor(g_s[0], requires_grad=True)
    sum(KDSVD()([first, torch.tensor(g_s[1])], g_t)).backward()
    numeric = numeric_gradient(
        lambda x: sum(KDSVD()([torch.tensor(x), torch.tensor(g_s[1])], g_t)).item(), g_s[0])
    np.testing.assert_allclose(first.grad.numpy(), numeric, rtol=1e-5, atol=1e-8)


def test_gradient_is_finite_with_dead_channels() -> None:
    """Two all-zero channels give equal zero singular values; PyTorch's SVD backward is NaN there,
    the loss's gradient (which does not involve those vectors) is finite and correct. (The teacher's
    channels are dead too: otherwise a perturbation may let a null-space vector of the student win
    the alignment, a jump of the loss that finite differences would measure.)"""
    g_s = random_maps([(2, 5, 3, 3), (2, 4, 2, 2)], seed=7)
    g_t_maps = random_maps([(2, 5, 3, 3), (2, 4, 2, 2)], seed=8)
    g_s[0][:, 3:] = 0.0
    g_t_maps[0][:, 3:] = 0.0
    g_t = [torch.tensor(f) for f in g_t_maps]
    first = torch.tensor(g_s[0], requires_grad=True)
    sum(KDSVD()([first, torch.tensor(g_s[1])], g_t)).backward()
    assert torch.isfinite(first.grad).all()
    numeric = numeric_gradient(
        lambda x: sum(KDSVD()([torch.tensor(x), torch.tensor(g_s[1])], g_t)).item(), g_s[0])
    np.testing.assert_allclose(first.grad.numpy(), numeric, rtol=1e-4, atol=1e-7)


def build(student: str, teacher: str) -> object:
    nets = {name: model_dict[name](num_classes=100) for name in (student, teacher)}
    shapes = {name: train_student.feature_shapes(net, False, torch.device("cpu")) for name, net in nets.items()}
    return build_from_shapes(shapes[student], shapes[teacher])


def build_from_shapes(student_shapes: list, teacher_shapes: list) -> object:
    context = DistillContext(argparse.Namespace(), torch.nn.Identity(), torch.nn.Identity(),
                             [torch.Size(s) for s in student_shapes], [torch.Size(s) for s in teacher_shapes],
                             torch.arange(10) % 100, torch.device("cpu"))
    return METHODS["kdsvd"](context)


def test_pair_with_unequal_channels_is_refused() -> None:
    build("resnet8x4", "resnet32x4")  # equal channels per stage: fine
    with pytest.raises(UserError, match=r"channel counts.*feats\[1\] \(C, H, W\): student \(116, 16, 16\) vs "
                                        r"teacher \(64, 32, 32\)"):
        build("ShuffleV2", "resnet32x4")
    stem, pooled = (2, 8, 8, 8), (2, 16)
    build_from_shapes([stem, (2, 8, 8, 8), (2, 16, 4, 4), pooled], [stem, (2, 8, 4, 4), (2, 16, 2, 2), pooled])
    with pytest.raises(UserError, match="student has 2 stage maps, teacher 3"):
        build_from_shapes([stem, (2, 8, 8, 8), (2, 16, 4, 4), pooled],
                          [stem, (2, 8, 8, 8), (2, 16, 4, 4), (2, 16, 2, 2), pooled])


@pytest.fixture(scope="module")
def small_cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar100(tmp_path_factory.mktemp("cifar_small"), n_train=16, n_test=8, seed=0)


@pytest.mark.slow
def test_seed_command_trains_resnet32x4_to_resnet8x4(small_cifar: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    teacher = write_published_teacher(tmp_path / "save", "resnet32x4")
    argv = ["--path_t", str(teacher.relative_to(tmp_path)), "--distill", "kdsvd", "--model_s", "resnet8x4",
            "--trial", "1", "--epochs", "1", "--batch_size", "8", "--data_folder", str(small_cifar),
            "--device", "cpu", "--no_progress"]
    train_student.main(argv)
    run = (tmp_path / "save" / "student" / "student_model" /
           "kdsvd_cifar100_S_resnet8x4_T_resnet32x4_r_1_a_0_b_1_trial_1")
    assert (run / "resnet8x4_last.pth").is_file()
    header, row = (run / "metrics.csv").read_text().splitlines()[:2]
    values = dict(zip(header.split(","), row.split(",")))
    assert float(values["kdsvd"]) > 0 and np.isfinite(float(values["train_loss"]))
