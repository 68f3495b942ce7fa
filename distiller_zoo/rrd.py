"""RRD: Giakoumoglou & Stathaki, "Relational Representation Distillation", arXiv:2407.12073, 2024.

Match the student's similarity distribution over a queue of past teacher embeddings to the
teacher's (sharper) one."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distiller_zoo.base import FEAT_DIM, NCE_K, DistillContext, Distiller, Features, Flag, register
from helper import distributed

__all__ = ["RRDLoss"]


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Softmax over a long queue at temperature 0.04 is too coarse in half precision (autocast)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class RRDLoss(nn.Module):
    """-sum_j softmax(<t, Q_j> / nce_t_t) * log_softmax(<s, Q_j> / nce_t_s), mean over the batch.

    opt needs s_dim, t_dim, feat_dim, nce_k (queue length), nce_t_s, nce_t_t. Student and teacher
    features are linearly embedded to feat_dim and L2-normalised; the teacher distribution is a
    fixed target (no gradient). After the loss is computed with the queue as it was, the batch's
    teacher embeddings are written into the ring buffer `queue` at `queue_ptr` (wrapping).
    Shapes: f_s (B, s_dim), f_t (B, t_dim) -> scalar. idx / contrast_idx are accepted and ignored
    so the call matches CRDLoss. Under torchrun every rank enqueues the teacher embeddings of all
    ranks (gathered in rank order), so the queues stay identical and equal to one process's on the
    global batch; the loss has no in-batch term, so each rank's loss is exact for its samples.
    """

    def __init__(self, opt: Any) -> None:
        super().__init__()
        self.nce_k = int(opt.nce_k)
        self.nce_t_s = float(opt.nce_t_s)
        self.nce_t_t = float(opt.nce_t_t)
        self.embed_s = nn.Linear(opt.s_dim, opt.feat_dim)
        self.embed_t = nn.Linear(opt.t_dim, opt.feat_dim)
        self.register_buffer("queue", F.normalize(torch.randn(self.nce_k, opt.feat_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    def forward(
        self,
        f_s: torch.Tensor,
        f_t: torch.Tensor,
        idx: torch.Tensor | None = None,
        contrast_idx: torch.Tensor | None = None,
    ) -> torch.Tensor:
        student = F.normalize(self.embed_s(f_s), dim=1)
        teacher = F.normalize(self.embed_t(f_t), dim=1)
        # snapshot: the in-place enqueue below must not change what backward sees
        queue = self.queue.detach().clone()
        student_logits = _at_least_float32(student @ queue.t()) / self.nce_t_s
        with torch.no_grad():
            teacher_probs = F.softmax(_at_least_float32(teacher @ queue.t()) / self.nce_t_t, dim=1)
        loss = -(teacher_probs * F.log_softmax(student_logits, dim=1)).sum(dim=1).mean()
        self._enqueue(distributed.all_gather(teacher.detach()))
        return loss

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        """Write keys (B, feat_dim) at queue_ptr, wrapping; keep the newest nce_k when B > nce_k."""
        batch_size = keys.shape[0]
        kept = min(batch_size, self.nce_k)
        offsets = torch.arange(batch_size - kept, batch_size, device=keys.device)
        positions = (self.queue_ptr + offsets) % self.nce_k  # distinct, no host sync
        self.queue.index_copy_(0, positions, keys[batch_size - kept :].to(self.queue.dtype))
        self.queue_ptr.copy_((self.queue_ptr + batch_size) % self.nce_k)


@register
class RelationalRepresentation(Distiller):
    """Student/teacher similarity distributions over a queue of --nce_k past teacher embeddings
    (temperatures --nce_t_s, --nce_t_t)."""

    display_name = "RRD"
    paper = "Giakoumoglou & Stathaki, Relational Representation Distillation, arXiv 2024"
    teacher_reads = "embedding"  # a teacher bank can stand in for the teacher
    flags = (FEAT_DIM, NCE_K, Flag("--nce_t_s", 0.04, "RRD student temperature", above=0),
             Flag("--nce_t_t", 0.10, "RRD teacher temperature", above=0))
    aliases = ("rcd",)
    sweep_with_kd = True
    default_beta = 1.0

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.criterion = RRDLoss(context.loss_options())

    def loss(self, features: Features) -> Tensor:
        return self.criterion(features.student[-1], features.teacher[-1])
