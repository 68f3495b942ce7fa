"""CC: Peng et al., "Correlation Congruence for Knowledge Distillation", ICCV 2019."""
from __future__ import annotations

from torch import Tensor

from distiller_zoo.base import DistillContext, Distiller, Features, register
from distiller_zoo.losses import Correlation
from models.util import LinearEmbed


@register("correlation")
class CC(Distiller):
    """Correlation congruence of linear embeddings (to --feat_dim) of the pooled features."""

    default_beta = 0.02

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        feat_dim = context.opt.feat_dim
        self.embed_student = LinearEmbed(context.student_shapes[-1][1], feat_dim)
        self.embed_teacher = LinearEmbed(context.teacher_shapes[-1][1], feat_dim)
        self.criterion = Correlation()

    def loss(self, features: Features) -> Tensor:
        return self.criterion(self.embed_student(features.student[-1]), self.embed_teacher(features.teacher[-1]))
