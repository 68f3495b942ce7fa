"""The numbers behind the figures: linear CKA, class-mean logit correlations, calibration, per-class accuracy.

Everything here is plain tensor/array math (no models, no files), computed in float64.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

ECE_BINS = 15  # Guo et al. 2017


def centered_gram(features: torch.Tensor, device: torch.device | str = "cpu", chunk: int = 8192) -> torch.Tensor:
    """Centred linear Gram matrix H X X^T H of ``features`` (n samples, any trailing shape), float64 (n, n).

    Each sample is flattened; the columns of X are centred (H X) and the product is summed over
    column chunks of ``chunk`` features, so a large feature map never needs a full float64 copy.
    """
    flat = features.reshape(features.shape[0], -1)
    gram = torch.zeros(flat.shape[0], flat.shape[0], dtype=torch.float64, device=device)
    for start in range(0, flat.shape[1], chunk):
        block = flat[:, start:start + chunk].to(device=device, dtype=torch.float64)
        block = block - block.mean(dim=0, keepdim=True)
        gram += block @ block.T
    return gram


def cka_from_grams(gram_x: torch.Tensor, gram_y: torch.Tensor) -> float:
    """Linear CKA from two centred Gram matrices: <Kc, Lc>_F / (||Kc||_F ||Lc||_F)
    (Kornblith et al., ICML 2019, eq. 4 with a linear kernel). NaN when a representation is constant."""
    denominator = float(gram_x.norm() * gram_y.norm())
    if denominator == 0.0:
        return float("nan")
    return float((gram_x * gram_y).sum()) / denominator


def linear_cka(features_x: torch.Tensor, features_y: torch.Tensor) -> float:
    """Linear CKA between two representations of the same n samples (Kornblith et al., ICML 2019):
    1 for identical representations, invariant to orthogonal transforms and isotropic scaling."""
    if features_x.shape[0] != features_y.shape[0]:
        raise ValueError(f"CKA needs the same samples: {features_x.shape[0]} vs {features_y.shape[0]} rows")
    return cka_from_grams(centered_gram(features_x), centered_gram(features_y))


def cka_matrix(student_grams: list[torch.Tensor], teacher_grams: list[torch.Tensor]) -> np.ndarray:
    """(student layers, teacher layers) matrix of linear CKA between every pair of centred Grams."""
    return np.array([[cka_from_grams(s, t) for t in teacher_grams] for s in student_grams], dtype=np.float64)


def class_mean_logits(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> np.ndarray:
    """(num_classes, num_logits) float64: row c is the mean logit vector over the samples of class c
    (NaN for a class without samples)."""
    logits64 = logits.to(torch.float64)
    sums = torch.zeros(num_classes, logits.shape[1], dtype=torch.float64).index_add_(0, labels, logits64)
    counts = torch.bincount(labels, minlength=num_classes).to(torch.float64)
    return (sums / counts[:, None]).numpy()


def class_correlation(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> np.ndarray:
    """(C, C) Pearson correlation between the class-mean logit vectors of every pair of classes
    (the matrices of the CRD (Tian et al., ICLR 2020) and DKD (Zhao et al., CVPR 2022) figures)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.corrcoef(class_mean_logits(logits, labels, num_classes))


def correlation_difference(teacher_logits: torch.Tensor, student_logits: torch.Tensor, labels: torch.Tensor,
                           num_classes: int) -> tuple[np.ndarray, float]:
    """|C_teacher - C_student| of the class correlation matrices, and its mean over the off-diagonal
    entries (the diagonal is 0 by construction); classes without samples are NaN and left out."""
    difference = np.abs(class_correlation(teacher_logits, labels, num_classes)
                        - class_correlation(student_logits, labels, num_classes))
    off_diagonal = difference[~np.eye(num_classes, dtype=bool)]
    finite = off_diagonal[np.isfinite(off_diagonal)]
    return difference, float(finite.mean()) if finite.size else float("nan")


@dataclass
class Calibration:
    """Expected calibration error and the per-bin numbers of a reliability diagram (Guo et al., ICML 2017)."""

    ece: float
    bin_edges: np.ndarray  # (bins + 1,) from 0 to 1
    counts: np.ndarray  # (bins,) samples whose confidence falls in (edge[m], edge[m+1]]
    accuracy: np.ndarray  # (bins,) fraction correct in each bin (NaN when empty)
    confidence: np.ndarray  # (bins,) mean confidence in each bin (NaN when empty)


def calibration(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> Calibration:
    """ECE = sum_m |B_m|/n |acc(B_m) - conf(B_m)| over ``bins`` equal-width confidence bins
    ((m-1)/M, m/M], where confidence is the top class probability (Guo et al., ICML 2017, eq. 3)."""
    probabilities = probabilities.to(torch.float64)
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == labels).to(torch.float64)
    edges = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64)
    which = torch.bucketize(confidence, edges[1:-1], right=False)  # edges[m] < confidence <= edges[m + 1]
    counts = torch.bincount(which, minlength=bins).to(torch.float64)
    correct_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, correct)
    confidence_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, confidence)
    ece = float((correct_sum - confidence_sum).abs().sum() / max(len(labels), 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = (correct_sum / counts).numpy()
        mean_confidence = (confidence_sum / counts).numpy()
    return Calibration(ece, edges.numpy(), counts.numpy().astype(np.int64), accuracy,
                       mean_confidence)


def per_class_accuracy(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> np.ndarray:
    """(num_classes,) top-1 accuracy in % of each class (NaN for a class without samples)."""
    correct = (logits.argmax(dim=1) == labels).to(torch.float64)
    hits = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, labels, correct)
    counts = torch.bincount(labels, minlength=num_classes).to(torch.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (100.0 * hits / counts).numpy()
