"""CRD: Tian, Krishnan & Isola, "Contrastive Representation Distillation", ICLR 2020.

The loss (``CRDLoss``) and its memory banks live in ``crd/``, where RepDistiller keeps them.
"""
from __future__ import annotations

from torch import Tensor

from crd.criterion import CRDLoss
from crd.memory import ContrastSampler, bank_bytes
from distiller_zoo.base import FEAT_DIM, NCE_K, NCE_T, DistillContext, Distiller, Features, Flag, register
from helper import distributed
from helper.errors import UserError

LARGE_BANK_BYTES = 2**28  # say how much memory the banks take from 256 MB on


@register
class ContrastiveRepresentation(Distiller):
    """NCE between student/teacher embeddings and momentum memory banks of the other network.
    Negatives (--nce_k, other classes only; with replacement for a class that has fewer) are sampled
    on the device each step. Under torchrun the banks and the negatives equal those of one process
    training on the global batch."""

    display_name = "CRD"
    paper = "Tian, Krishnan & Isola, Contrastive Representation Distillation, ICLR 2020"
    teacher_reads = "embedding"  # a teacher bank can stand in for the teacher
    flags = (FEAT_DIM, NCE_K, NCE_T,
             Flag("--nce_m", 0.5, "CRD memory momentum", minimum=0, maximum=1),
             Flag("--mode", "exact", "CRD positives: the sample itself (exact) or a same-class sample (relax)",
                  choices=("exact", "relax")),
             Flag("--crd_bank_dtype", "fp32", "CRD memory banks: 2 x n_data x feat_dim values (ImageNet, fp32: "
                  "1.3 GB; bf16: 0.66 GB)", choices=("fp32", "bf16", "fp16")))
    sweep_with_kd = True
    default_beta = 0.8

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        opt = context.loss_options()
        try:
            self.sampler = ContrastSampler(context.train_labels, opt.nce_k, opt.mode, context.device)
        except ValueError as error:
            raise UserError(f"--distill crd needs at least two classes: {error}.") from None
        short = self.sampler.short_classes
        if short and distributed.is_main():
            print(f"CRD: --nce_k {opt.nce_k} is more than the negatives (samples of other classes) that {len(short)} "
                  f"of {self.sampler.num_classes} classes have (fewest: {self.sampler.smallest_negatives}); their "
                  "negatives are drawn with replacement, as the reference implementations do.")
        self.criterion = CRDLoss(opt, defer_update=True)  # banks updated in after_step
        size = bank_bytes(opt.n_data, opt.feat_dim, opt.crd_bank_dtype)
        if size >= LARGE_BANK_BYTES:
            print(f"CRD memory banks: 2 x {opt.n_data} x {opt.feat_dim} x {opt.crd_bank_dtype} = {size / 1e9:.2f} GB "
                  "per process (--crd_bank_dtype bf16 halves it; --distill rrd keeps only --nce_k embeddings)")

    def loss(self, features: Features) -> Tensor:
        contrast_index = self.sampler(features.index, features.labels)
        return self.criterion(features.student[-1], features.teacher[-1], features.index, contrast_index)

    def after_step(self) -> None:
        """The memory banks' momentum update, after the optimizer step (no bank copy for backward)."""
        self.criterion.apply_memory_update()
