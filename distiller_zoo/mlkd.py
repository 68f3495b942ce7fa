"""MLKD: Jin, Wang & Lin, "Multi-Level Logit Distillation", CVPR 2023.

Aligns the teacher's and the student's predictions at three levels, each at five temperatures
("prediction augmentation"): instance (KD), batch (the B x B similarities of the batch's predictions)
and class (the C x C correlations of the classes over the batch), on a weak (crop + flip) and a
strong (+ RandAugment + Cutout) view of every image. The terms, temperatures, confidence shares and
weights follow the official code (Jin-Ying/Multi-Level-Logit-Distillation, KD_ours); with
--logit_stand the instance terms z-score the logits first (Sun et al., CVPR 2024, their MLKD).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from distiller_zoo.base import LOGIT_STAND, DistillContext, Distiller, Features, register
from distiller_zoo.kd import kd_loss

__all__ = ["cc_loss", "bc_loss", "confidence_shares", "multi_level_loss"]

# The official temperatures after the first, which is cfg.KD.TEMPERATURE (here --kd_T, default 4).
OTHER_TEMPERATURES = (3.0, 5.0, 2.0, 6.0)


def cc_loss(logits_student: Tensor, logits_teacher: Tensor, temperature: float) -> Tensor:
    """Class level: sum of squared differences of the class-correlation matrices P^T P (C x C) of the
    softened predictions, divided by C. Shapes: (B, C), (B, C) -> scalar."""
    pred_student = F.softmax(logits_student / temperature, dim=1)
    pred_teacher = F.softmax(logits_teacher / temperature, dim=1)
    student_matrix = pred_student.t() @ pred_student
    teacher_matrix = pred_teacher.t() @ pred_teacher
    return ((teacher_matrix - student_matrix) ** 2).sum() / logits_teacher.shape[1]


def bc_loss(logits_student: Tensor, logits_teacher: Tensor, temperature: float) -> Tensor:
    """Batch level: sum of squared differences of the sample-similarity matrices P P^T (B x B) of the
    softened predictions, divided by B. Shapes: (B, C), (B, C) -> scalar."""
    pred_student = F.softmax(logits_student / temperature, dim=1)
    pred_teacher = F.softmax(logits_teacher / temperature, dim=1)
    student_matrix = pred_student @ pred_student.t()
    teacher_matrix = pred_teacher @ pred_teacher.t()
    return ((teacher_matrix - student_matrix) ** 2).sum() / logits_teacher.shape[0]


def confidence_shares(logits_teacher: Tensor) -> tuple[Tensor, Tensor]:
    """The official confidence masking of the weak view, as it acts on the losses.

    mask = teacher confidence max_c softmax(z_t) <= its batch median (np.percentile 50, linear), and
    class_mask = the class's summed probability over the batch <= the median over classes. The
    official code multiplies a batch-mean loss (a scalar) by the mask and averages, so each masked
    term is scaled by the share of True entries. Returns the two shares as 0-dim tensors (no grad).
    """
    with torch.no_grad():
        precision = torch.promote_types(logits_teacher.dtype, torch.float32)  # no quantile in half precision
        probabilities = F.softmax(logits_teacher.to(precision), dim=1)
        confidence = probabilities.max(dim=1).values
        class_confidence = probabilities.sum(dim=0)
        sample_share = (confidence <= torch.quantile(confidence, 0.5)).float().mean()
        class_share = (class_confidence <= torch.quantile(class_confidence, 0.5)).float().mean()
    return sample_share, class_share


def multi_level_loss(weak_student: Tensor, weak_teacher: Tensor, strong_student: Tensor, strong_teacher: Tensor,
                     temperatures: Sequence[float], logit_stand: bool = False) -> Tensor:
    """The official MLKD distillation loss (unweighted; the official weight 0.9 is -b).

    With m, k the shares of ``confidence_shares`` (weak teacher) and T_1..T_5 = ``temperatures``::

        sum_i m * KD(weak, T_i)                                          # instance, weak view
        + KD(strong, T_1..T_3) + KD(weak, T_4..T_5)                      # instance, 'strong' terms
        + sum_i k * CC(weak, T_i) + sum_i m * BC(weak, T_i)              # class and batch levels

    The last two 'strong' instance terms read the weak view's logits, and the strong view's class and
    batch terms are computed but not added, exactly as in the official KD_ours. KD z-scores the logits
    first with ``logit_stand``. Shapes: four (B, C) logits -> scalar.
    """
    sample_share, class_share = confidence_shares(weak_teacher)
    instance_weak = sum(kd_loss(weak_student, weak_teacher, t, logit_stand) for t in temperatures) * sample_share
    instance_strong = (sum(kd_loss(strong_student, strong_teacher, t, logit_stand) for t in temperatures[:3])
        + sum(kd_loss(weak_student, weak_teacher, t, logit_stand) for t in temperatures[3:]))
    class_level = sum(cc_loss(weak_student, weak_teacher, t) for t in temperatures) * class_share
    batch_level = sum(bc_loss(weak_student, weak_teacher, t) for t in temperatures) * sample_share
    return instance_weak + instance_strong + class_level + batch_level


@register
class MultiLevelLogit(Distiller):
    """Instance, batch and class alignment of the predictions at temperatures (--kd_T, 3, 5, 2, 6)
    on a weak and a strong view of each image; CE on both views (official weights 0.1 and 0.9).

    Data path: the train loader yields the strong view (``views``; dataset/randaugment.py, PIL's
    arithmetic), batched on the device by the fast loader and per image in the workers by the classic
    one. It is made from the stored uint8 image rather than from the weak batch, so its crop and
    flip are drawn independently of the weak view's, as officially; the fast loader stays on the
    device, and the draws belong to the (seed, epoch) stream, so a resumed run sees the same views.
    The official CIFAR-100 runs use --learning_rate 0.025 (batch 64, 240 epochs, weight decay 5e-4).
    """

    display_name = "MLKD"
    paper = "Jin, Wang & Lin, Multi-Level Logit Distillation, CVPR 2023"
    flags = (LOGIT_STAND,)
    views = ("weak", "strong")
    # Official cfg: KD.LOSS.CE_WEIGHT 0.1 (CE of each view), KD.LOSS.KD_WEIGHT 0.9 (every level term).
    default_gamma = 0.1
    default_alpha = 0.0
    default_beta = 0.9
    uses_features = False

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.temperatures = (float(context.opt.kd_T), *OTHER_TEMPERATURES)
        self.logit_stand = context.opt.logit_stand

    def loss(self, features: Features) -> Tensor:
        strong = features.views["strong"]
        return multi_level_loss(features.student_logits, features.teacher_logits, strong.student_logits,
                                strong.teacher_logits, self.temperatures, self.logit_stand)
