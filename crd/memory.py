"""Memory banks and negative sampling for contrastive representation distillation
(Tian et al., 2020, "Contrastive Representation Distillation", ICLR; eqs. 9-19).

Under torchrun the banks stay identical on every rank: Z is fixed from the mean score over the
global batch, and every rank applies the momentum update with the embeddings and indices gathered
from all ranks (in rank order, i.e. exactly the single-process batch). The sampler draws its random
numbers for the whole global batch on every rank (same seed, same stream) and keeps its own rows.

Memory: the two banks hold 2 x n_data x feat_dim values, e.g. ImageNet (1,281,167 images) at
feat_dim 128: 1.31 GB in fp32, 0.66 GB in bf16/fp16 (``bank_dtype``); scoring a batch against all
rows takes another (B, n_data) fp32 score matrix per direction while it trains.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from helper import distributed

BANK_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def bank_bytes(n_data: int, feat_dim: int, bank_dtype: str = "fp32") -> int:
    """Bytes the two CRD memory banks take: 2 x n_data x feat_dim x bytes per value."""
    return 2 * n_data * feat_dim * BANK_DTYPES[bank_dtype].itemsize


def _sampled_scores(
    bank: torch.Tensor, embeddings: torch.Tensor, contrast_idx: torch.Tensor, temperature: float,
    snapshot: bool = True,
) -> torch.Tensor:
    """exp(<bank[contrast_idx[b, j]], embeddings[b]> / T) as a (B, K+1) tensor.

    Scores every bank row with one (B, D) @ (D, n_data) matmul and gathers the B x (K+1)
    sampled scalars, instead of gathering B x (K+1) x D rows (identical math, far less memory
    traffic). With ``snapshot`` the bank is copied when autograd needs it, because the momentum
    update then writes into it in place before backward runs (not needed when the update waits
    until after the optimizer step); a half-precision bank is scored in the embeddings' precision.
    """
    if snapshot and torch.is_grad_enabled() and embeddings.requires_grad:
        bank = bank.to(embeddings.dtype, copy=True)
    elif bank.dtype != embeddings.dtype and not torch.is_autocast_enabled(embeddings.device.type):
        bank = bank.to(embeddings.dtype)
    all_scores = embeddings @ bank.t()  # (B, n_data)
    sampled = all_scores.gather(1, contrast_idx)
    if sampled.dtype in (torch.float16, torch.bfloat16):  # exp(1/T) and Z need fp32 under autocast
        sampled = sampled.float()
    return sampled.div(temperature).exp()


class ContrastMemory(nn.Module):
    """Two momentum memory banks (student `memory_v1`, teacher `memory_v2`) for the CRD NCE loss.

    forward(v1, v2, y, idx) with v1 (B, D) student and v2 (B, D) teacher embeddings, y (B,)
    dataset indices and idx (B, K+1) rows to contrast (positive first), returns
    (out_v1, out_v2), each (B, K+1): out_v1 = exp(<memory_v2[idx], v1>/T) / Z_v1 and
    out_v2 = exp(<memory_v1[idx], v2>/T) / Z_v2. Z is fixed on the first call to
    mean(out) * n_data. Afterwards rows y move to normalize(m * row + (1 - m) * v).
    ``bank_dtype`` ('fp32', 'bf16', 'fp16') stores the banks in half precision to save memory.
    ``defer_update``: forward only records that update, and ``apply_pending_update()`` (called after
    the optimizer step, or at the latest by the next forward) applies it; the banks then need no
    snapshot for backward, and the results are bit-identical to updating inside forward.
    """

    def __init__(
        self, inputSize: int, outputSize: int, K: int, T: float = 0.07, momentum: float = 0.5,
        bank_dtype: str = "fp32", defer_update: bool = False,
    ) -> None:
        super().__init__()
        self.defer_update = defer_update
        self._pending: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.n_data = outputSize
        self.K = K
        self.T = T
        self.momentum = momentum
        bound = 1.0 / math.sqrt(inputSize / 3)
        dtype = BANK_DTYPES[bank_dtype]
        self.register_buffer("memory_v1", torch.rand(outputSize, inputSize).mul_(2 * bound).sub_(bound).to(dtype))
        self.register_buffer("memory_v2", torch.rand(outputSize, inputSize).mul_(2 * bound).sub_(bound).to(dtype))
        self.register_buffer("Z_v1", torch.tensor(-1.0))
        self.register_buffer("Z_v2", torch.tensor(-1.0))

    def draw_uniform(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, K+1) indices: y first, then K uniform draws over the bank with replacement
        (the reference's sampler when no contrast indices are given; under torchrun this rank's
        rows of a draw for the global batch)."""
        batch_size, rank = y.shape[0], distributed.rank()
        negatives = torch.randint(
            self.n_data, (distributed.world_size() * batch_size, self.K), device=y.device, generator=generator
        )[rank * batch_size:(rank + 1) * batch_size]
        return torch.cat([y.view(-1, 1).long(), negatives], dim=1)

    def forward(
        self,
        v1: torch.Tensor,
        v2: torch.Tensor,
        y: torch.Tensor,
        idx: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if idx is None:
            idx = self.draw_uniform(y)
        idx = idx.long()
        assert idx.shape[0] == v1.shape[0], "contrast indices must have one row per sample"

        self.apply_pending_update()  # a forward without after-step hook in between: update first
        out_v2 = _sampled_scores(self.memory_v1, v2, idx, self.T, snapshot=not self.defer_update)
        out_v1 = _sampled_scores(self.memory_v2, v1, idx, self.T, snapshot=not self.defer_update)

        with torch.no_grad():  # sync-free "set Z once": keep it if already positive
            means = torch.stack([out_v1.mean(), out_v2.mean()])
            means = distributed.all_reduce_sum(means) / distributed.world_size()  # global batch mean
            z_v1 = torch.where(self.Z_v1 < 0, means[0] * self.n_data, self.Z_v1)
            z_v2 = torch.where(self.Z_v2 < 0, means[1] * self.n_data, self.Z_v2)
            self.Z_v1.copy_(z_v1)
            self.Z_v2.copy_(z_v2)
        out_v1 = out_v1 / z_v1
        out_v2 = out_v2 / z_v2

        if self.defer_update:
            self._pending = (v1.detach(), v2.detach(), y)
        else:
            self.update_memory(v1, v2, y)
        return out_v1, out_v2

    def apply_pending_update(self) -> None:
        """Apply the momentum update a deferred forward recorded (nothing when none is pending)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self.update_memory(*pending)

    @torch.no_grad()
    def update_memory(self, v1: torch.Tensor, v2: torch.Tensor, y: torch.Tensor) -> None:
        """Momentum update of the rows y of both banks, then L2-normalise them (in fp32 for
        half-precision banks). Under torchrun, with every rank's rows (gathered)."""
        y = distributed.all_gather(y.view(-1).long())
        for bank, embeddings in ((self.memory_v1, v1), (self.memory_v2, v2)):
            work = torch.promote_types(bank.dtype, torch.float32)  # at least fp32
            embeddings = distributed.all_gather(embeddings.detach().to(work))
            rows = bank.index_select(0, y).to(work) * self.momentum + embeddings * (1 - self.momentum)
            bank.index_copy_(0, y, F.normalize(rows, dim=1).to(bank.dtype))


class ContrastSampler:
    """Draws CRD contrast indices on the device: (B, nce_k + 1), positive first.

    Column 0 is the anchor itself ('exact') or a uniformly random sample of its class, possibly
    itself ('relax'). Columns 1.. are nce_k distinct samples of the *other* classes; for an anchor
    whose class has fewer than nce_k such negatives (small datasets, subsets), nce_k uniform draws
    from them with replacement, as RepDistiller's CIFAR-100 sampler does (``short_classes``).

    Scheme (O(B * nce_k) work, no per-sample Python): one uniform permutation pi of the dataset
    is drawn per call. For an anchor of class c, restricting pi to the N_c samples not in class
    c gives a uniformly random ordering sigma_c of them; the row takes the cyclic window
    sigma_c[(o + i) mod N_c], i = 1..nce_k, at an independent uniform offset o. For any fixed o
    the window is the image of nce_k fixed distinct positions under a uniformly random ordering,
    i.e. a uniformly random nce_k-subset of the negatives; hence so is the row. (Rows of one
    call share pi, so they are not independent of each other; each row on its own is exact.)
    sigma_c is never built: in the doubled sequence pi + pi, whose class-c positions are
    q_0 < q_1 < ..., the j-th non-class-c element sits at j + #{m : q_m - m <= j}; over the
    window's consecutive ranks that count is a cumsum, and doubling makes the wrap free.
    """

    def __init__(
        self,
        labels: torch.Tensor,
        nce_k: int,
        mode: str = "exact",
        device: torch.device | str | None = None,
    ) -> None:
        if mode not in ("exact", "relax"):
            raise ValueError(f"mode must be 'exact' or 'relax', got {mode!r}")
        labels = torch.as_tensor(labels)
        device = torch.device(device) if device is not None else labels.device
        labels = labels.to(device).long().view(-1)
        self.labels = labels
        self.nce_k = int(nce_k)
        self.mode = mode
        self.device = device
        self.n_data = labels.numel()

        self.class_counts = torch.bincount(labels)
        largest_class = int(self.class_counts.max())
        self.smallest_negatives = self.n_data - largest_class
        if self.smallest_negatives == 0:
            raise ValueError(f"all {self.n_data} samples are of one class: there are no negatives to contrast")
        present = torch.nonzero(self.class_counts).view(-1)
        self.num_classes = int(present.numel())
        self.short_classes = [int(c) for c in present if self.n_data - int(self.class_counts[c]) < self.nce_k]
        # members[c, r] = r-th sample of class c, padded with -1
        order = torch.argsort(labels, stable=True)
        sorted_labels = labels[order]
        class_starts = torch.cumsum(self.class_counts, 0) - self.class_counts
        self.class_sorted, self.class_starts = order, class_starts
        rank_in_class = torch.arange(self.n_data, device=device) - class_starts[sorted_labels]
        self.members = torch.full(
            (self.class_counts.numel(), largest_class), -1, dtype=torch.long, device=device
        )
        self.members[sorted_labels, rank_in_class] = order
        self._slot = torch.arange(largest_class, device=device)
        self._double_slot = torch.arange(2 * largest_class, device=device)

    def __call__(
        self,
        index: torch.Tensor,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        shard: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """index (B,) dataset indices -> (B, nce_k + 1) long on the sampler's device.

        labels (B,) default to the table's labels of index; generator, if given, must live on
        the sampler's device (a seeded one makes the draw reproducible). shard (rank, world_size),
        default this process's: the B anchors are rows rank*B ... (rank+1)*B - 1 of a global batch
        of world_size*B; the random numbers are drawn for the whole global batch (identically on
        every rank) and this shard's rows are kept, so the rows equal those of a single-process
        call on the global batch.
        """
        n_data, device = self.n_data, self.device
        rank, world_size = shard if shard is not None else (distributed.rank(), distributed.world_size())
        index = index.to(device).long().view(-1)
        classes = self.labels[index] if labels is None else labels.to(device).long().view(-1)
        batch_size = index.numel()
        rows = slice(rank * batch_size, (rank + 1) * batch_size)  # of the global batch's random draws
        counts = self.class_counts[classes].unsqueeze(1)  # (B, 1)
        members = self.members[classes]  # (B, largest_class)
        valid = self._slot < counts

        if self.mode == "exact":
            positives = index
        else:
            u = torch.rand(world_size * batch_size, 1, device=device, generator=generator, dtype=torch.float64)[rows]
            pick = torch.minimum((u * counts).long(), counts - 1)
            positives = members.gather(1, pick).squeeze(1)

        permutation = torch.randperm(n_data, device=device, generator=generator)
        position_of = torch.empty_like(permutation)
        position_of[permutation] = torch.arange(n_data, device=device)
        # class positions in pi + pi, padding (2 * n_data) sorted last
        positions = torch.where(valid, position_of[members.clamp(min=0)], 2 * n_data)
        positions = torch.cat([positions, positions + n_data], dim=1).sort(dim=1).values
        # q_m - m for the 2 * count real entries; padding 2 * n_data exceeds every rank below
        shifted = torch.where(
            self._double_slot < 2 * counts, positions - self._double_slot, 2 * n_data
        )

        num_negatives = n_data - counts  # (B, 1)
        u = torch.rand(world_size * batch_size, 1, device=device, generator=generator, dtype=torch.float64)[rows]
        offsets = torch.minimum((u * num_negatives).long(), num_negatives - 1)
        # location of rank o + i (i = 0..nce_k) is (o + i) + #{m : shifted_m <= o + i}: a running
        # count, built as a cumsum of increments (faster than a batched searchsorted)
        relative = shifted - offsets
        in_window = (relative >= 1) & (relative <= self.nce_k)
        increments = torch.ones(batch_size, self.nce_k + 1, dtype=torch.long, device=device)
        increments[:, 0] = (offsets + (relative <= 0).sum(1, keepdim=True)).squeeze(1)
        increments.scatter_add_(1, relative.clamp(0, self.nce_k), in_window.long())
        locations = increments.cumsum_(1)  # (B, nce_k + 1), all < 2 * n_data unless the class is short
        if self.short_classes:
            locations.clamp_(max=2 * n_data - 1)  # short classes' rows are replaced below
        doubled = torch.cat([permutation, permutation])
        contrast_idx = doubled.index_select(0, locations.view(-1)).view(batch_size, -1)
        if self.short_classes:
            short = (num_negatives < self.nce_k).view(-1, 1)
            drawn = self._with_replacement(classes, counts, world_size, rows, generator)
            contrast_idx[:, 1:] = torch.where(short, drawn, contrast_idx[:, 1:])
        contrast_idx[:, 0] = positives  # column 0 of the window is discarded
        return contrast_idx

    def _with_replacement(self, classes: torch.Tensor, counts: torch.Tensor, world_size: int, rows: slice,
                          generator: torch.Generator | None) -> torch.Tensor:
        """(B, nce_k) uniform draws with replacement from each anchor's negatives: the j-th negative
        of class c is the j-th sample of the class-sorted order, skipping class c's block."""
        num_negatives = self.n_data - counts  # (B, 1)
        u = torch.rand(world_size * classes.numel(), self.nce_k, device=self.device, generator=generator,
                       dtype=torch.float64)[rows]
        rank = torch.minimum((u * num_negatives).long(), num_negatives - 1)
        starts = self.class_starts[classes].unsqueeze(1)
        return self.class_sorted[torch.where(rank >= starts, rank + counts, rank)]
