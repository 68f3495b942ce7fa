"""Memory banks and negative sampling for contrastive representation distillation
(Tian et al., 2020, "Contrastive Representation Distillation", ICLR; eqs. 9-19)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def _sampled_scores(
    bank: torch.Tensor, embeddings: torch.Tensor, contrast_idx: torch.Tensor, temperature: float
) -> torch.Tensor:
    """exp(<bank[contrast_idx[b, j]], embeddings[b]> / T) as a (B, K+1) tensor.

    Scores every bank row with one (B, D) @ (D, n_data) matmul and gathers the B x (K+1)
    sampled scalars, instead of gathering B x (K+1) x D rows (identical math, far less memory
    traffic). The bank is snapshotted when autograd needs it, because the momentum update
    writes into it in place before backward runs.
    """
    if torch.is_grad_enabled() and embeddings.requires_grad:
        bank = bank.clone()
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
    """

    def __init__(
        self, inputSize: int, outputSize: int, K: int, T: float = 0.07, momentum: float = 0.5
    ) -> None:
        super().__init__()
        self.n_data = outputSize
        self.K = K
        self.T = T
        self.momentum = momentum
        bound = 1.0 / math.sqrt(inputSize / 3)
        self.register_buffer("memory_v1", torch.rand(outputSize, inputSize).mul_(2 * bound).sub_(bound))
        self.register_buffer("memory_v2", torch.rand(outputSize, inputSize).mul_(2 * bound).sub_(bound))
        self.register_buffer("Z_v1", torch.tensor(-1.0))
        self.register_buffer("Z_v2", torch.tensor(-1.0))

    def draw_uniform(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, K+1) indices: y first, then K uniform draws over the bank with replacement
        (the reference's sampler when no contrast indices are given)."""
        negatives = torch.randint(
            self.n_data, (y.shape[0], self.K), device=y.device, generator=generator
        )
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

        out_v2 = _sampled_scores(self.memory_v1, v2, idx, self.T)
        out_v1 = _sampled_scores(self.memory_v2, v1, idx, self.T)

        with torch.no_grad():  # sync-free "set Z once": keep it if already positive
            z_v1 = torch.where(self.Z_v1 < 0, out_v1.mean() * self.n_data, self.Z_v1)
            z_v2 = torch.where(self.Z_v2 < 0, out_v2.mean() * self.n_data, self.Z_v2)
            self.Z_v1.copy_(z_v1)
            self.Z_v2.copy_(z_v2)
        out_v1 = out_v1 / z_v1
        out_v2 = out_v2 / z_v2

        self.update_memory(v1, v2, y)
        return out_v1, out_v2

    @torch.no_grad()
    def update_memory(self, v1: torch.Tensor, v2: torch.Tensor, y: torch.Tensor) -> None:
        """Momentum update of the rows y of both banks, then L2-normalise them."""
        y = y.view(-1).long()
        for bank, embeddings in ((self.memory_v1, v1), (self.memory_v2, v2)):
            rows = bank.index_select(0, y) * self.momentum + embeddings.detach().to(bank.dtype) * (
                1 - self.momentum
            )
            bank.index_copy_(0, y, F.normalize(rows, dim=1))


class ContrastSampler:
    """Draws CRD contrast indices on the device: (B, nce_k + 1), positive first.

    Column 0 is the anchor itself ('exact') or a uniformly random sample of its class, possibly
    itself ('relax'). Columns 1.. are nce_k distinct samples of the *other* classes.

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
        smallest_negatives = self.n_data - largest_class
        if self.nce_k > smallest_negatives:
            raise ValueError(
                f"nce_k={self.nce_k} exceeds the {smallest_negatives} negatives available to the "
                f"largest class ({largest_class} of {self.n_data} samples); lower --nce_k to at "
                f"most {smallest_negatives}"
            )
        # members[c, r] = r-th sample of class c, padded with -1
        order = torch.argsort(labels, stable=True)
        sorted_labels = labels[order]
        class_starts = torch.cumsum(self.class_counts, 0) - self.class_counts
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
    ) -> torch.Tensor:
        """index (B,) dataset indices -> (B, nce_k + 1) long on the sampler's device.

        labels (B,) default to the table's labels of index; generator, if given, must live on
        the sampler's device (a seeded one makes the draw reproducible).
        """
        n_data, device = self.n_data, self.device
        index = index.to(device).long().view(-1)
        classes = self.labels[index] if labels is None else labels.to(device).long().view(-1)
        batch_size = index.numel()
        counts = self.class_counts[classes].unsqueeze(1)  # (B, 1)
        members = self.members[classes]  # (B, largest_class)
        valid = self._slot < counts

        if self.mode == "exact":
            positives = index
        else:
            u = torch.rand(batch_size, 1, device=device, generator=generator, dtype=torch.float64)
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
        u = torch.rand(batch_size, 1, device=device, generator=generator, dtype=torch.float64)
        offsets = torch.minimum((u * num_negatives).long(), num_negatives - 1)
        # location of rank o + i (i = 0..nce_k) is (o + i) + #{m : shifted_m <= o + i}: a running
        # count, built as a cumsum of increments (faster than a batched searchsorted)
        relative = shifted - offsets
        in_window = (relative >= 1) & (relative <= self.nce_k)
        increments = torch.ones(batch_size, self.nce_k + 1, dtype=torch.long, device=device)
        increments[:, 0] = (offsets + (relative <= 0).sum(1, keepdim=True)).squeeze(1)
        increments.scatter_add_(1, relative.clamp(0, self.nce_k), in_window.long())
        locations = increments.cumsum_(1)  # (B, nce_k + 1), all < 2 * n_data
        doubled = torch.cat([permutation, permutation])
        contrast_idx = doubled.index_select(0, locations.view(-1)).view(batch_size, -1)
        contrast_idx[:, 0] = positives  # column 0 of the window is discarded
        return contrast_idx
