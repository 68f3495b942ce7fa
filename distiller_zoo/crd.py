"""CRD: Tian et al., "Contrastive Representation Distillation", ICLR 2020."""
from __future__ import annotations

from torch import Tensor

from crd.criterion import CRDLoss
from crd.memory import ContrastSampler
from distiller_zoo.base import DistillContext, Distiller, Features, register
from helper.errors import UserError


@register("crd")
class CRD(Distiller):
    """NCE between student/teacher embeddings and momentum memory banks of the other network.
    Negatives (--nce_k, other classes only) are sampled on the device each step."""

    default_beta = 0.8

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        opt = context.loss_options()
        try:
            self.sampler = ContrastSampler(context.train_labels, opt.nce_k, opt.mode, context.device)
        except ValueError as error:
            raise UserError(f"--nce_k {opt.nce_k} is too large for this dataset: {error}") from None
        self.criterion = CRDLoss(opt)

    def loss(self, features: Features) -> Tensor:
        contrast_index = self.sampler(features.index, features.labels)
        return self.criterion(features.student[-1], features.teacher[-1], features.index, contrast_index)
