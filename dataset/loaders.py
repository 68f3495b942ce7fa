"""Batch iterators over an `ImageData` split, in two pipelines with one protocol.

* fast (default): the uint8 split lives on the device; each batch is gathered by index, randomly
  cropped (zero padding 4) and flipped, and normalised there, all batched.
* classic: the RepDistiller pipeline, a torch DataLoader running PIL + torchvision transforms per
  image in worker processes; kept for comparison.

Both draw epoch ``e``'s shuffle (and augmentation) from a generator seeded by ``(seed, e)`` only,
so a run resumed at (epoch, step) sees exactly the batches the uninterrupted run would have seen.
Both yield ``(images, labels, index)`` on the device: float32 (B, 3, 32, 32) normalised, int64 (B,)
labels and int64 (B,) sample indices into the split (CRD needs them).

A training loader can yield several augmented views of each image (``views``, names from ``VIEWS``):
then ``images`` is a tuple with one such tensor per view, in the order asked. 'weak' is the
crop + flip above; 'strong' is an independent crop + flip followed by FixMatch's RandAugment and
Cutout (dataset/randaugment.py), which MLKD trains on. The fast loader applies it batched on the
device, the classic one per image in its workers; both with the same code, on uint8 pixels.

Under torchrun (``world_size`` N > 1) every rank draws the same epoch permutation; a training step
consumes one global batch of N x batch_size positions and rank r takes the contiguous slice
[r * batch_size, (r + 1) * batch_size) of it, so the union of a step's rank batches is exactly the
batch a single process with batch size N x batch_size would see (augmentation included), and
gathering in rank order restores its order. Test splits are cut into N contiguous shards.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from dataset.randaugment import StrongParams, draw_strong_params, strong_augment

PADDING = 4  # RandomCrop(32, padding=4)
VIEWS_PER_IMAGE = (2 * PADDING + 1) ** 2 * 2  # 162 crop corners x flips: the finite set of 'weak' views
EPOCH_SEED_STRIDE = 1_000_003

Batch = tuple[torch.Tensor | tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor]
VIEWS = ("weak", "strong")  # augmented views a training loader can yield (module docstring)


class Loader(Protocol):
    """What the training loop relies on; both pipelines implement it."""

    batch_size: int
    num_samples: int

    def __len__(self) -> int:
        """Batches per epoch."""
        ...

    def iterate(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """Yield epoch ``epoch``'s batches from batch ``start_step`` on."""
        ...


TrainLoader = Loader
TestLoader = Loader


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """CPU generator whose stream is a pure function of (seed, epoch)."""
    return torch.Generator().manual_seed(seed * EPOCH_SEED_STRIDE + epoch)


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32, with exactly the float ops of torchvision ToTensor + Normalize."""
    return images.float().div(255).sub(mean).div(std)


def random_crop_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor,
                     padding: int = PADDING) -> torch.Tensor:
    """Batched RandomCrop(size, padding) with zero fill, then horizontal flip where ``flips``.

    images: uint8 (B, C, H, W); offsets: int64 (B, 2) crop corner (row, col) in the padded image, each
    in [0, 2 * padding]; flips: bool (B,). Returns (B, C, H, W): one gather with per-sample flat
    indices into the padded images (4-5x faster on CPU than 4-way advanced indexing).
    """
    batch, channels, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding)).flatten(2)  # (B, C, (H+2p)(W+2p))
    device = images.device
    rows = offsets[:, 0:1] + torch.arange(height, device=device)  # (B, H)
    cols = offsets[:, 1:2] + torch.arange(width, device=device)  # (B, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    flat = rows[:, :, None] * (width + 2 * padding) + cols[:, None, :]  # (B, H, W)
    flat = flat.view(batch, 1, height * width).expand(batch, channels, height * width)
    return padded.gather(2, flat).view(batch, channels, height, width)


def view_ids(offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """The number of each crop corner (B, 2) and flip (B,) among an image's VIEWS_PER_IMAGE crop +
    flip views: (row * (2 * PADDING + 1) + col) * 2 + flip, int64 (B,)."""
    return (offsets[:, 0] * (2 * PADDING + 1) + offsets[:, 1]) * 2 + flips.long()


def strong_view(images: torch.Tensor, params: StrongParams) -> torch.Tensor:
    """The 'strong' view of uint8 (B, C, H, W) images: crop + flip at ``params``, then RandAugment
    and Cutout (dataset/randaugment.py). Returns uint8 (B, C, H, W)."""
    return strong_augment(random_crop_flip(images, params.offsets, params.flips), params)


def check_views(views: Sequence[str], train: bool) -> tuple[str, ...]:
    """The views a loader yields: those asked for a training split (known names, no repeats), 'weak' for a test split."""
    views = tuple(views)
    unknown = [name for name in views if name not in VIEWS]
    if unknown or not views or len(set(views)) != len(views):
        raise ValueError(f"views must be distinct names from {VIEWS}, got {views}")
    return views if train else ("weak",)


def _num_batches(num_samples: int, batch_size: int, train: bool, world_size: int = 1) -> int:
    """Train: full global batches per epoch; test: batches in this rank's shard (``num_samples`` is the shard)."""
    return num_samples // (batch_size * world_size) if train else math.ceil(num_samples / batch_size)


def test_shard(num_samples: int, rank: int, world_size: int) -> range:
    """Rank ``rank``'s contiguous share of a test split (sizes differ by at most one)."""
    return range(rank * num_samples // world_size, (rank + 1) * num_samples // world_size)


def rank_positions(num_samples: int, batch_size: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """Positions in a training epoch's order that rank ``rank`` trains on, batch after batch.

    Step s of rank r covers positions s*N*B + r*B ... s*N*B + (r+1)*B - 1 (N ranks, B = batch_size);
    with N = 1 this is simply 0 ... steps*B - 1. Returns int64 (steps * B,).
    """
    steps = num_samples // (batch_size * world_size)
    starts = torch.arange(steps) * (batch_size * world_size) + rank * batch_size
    return (starts[:, None] + torch.arange(batch_size)).reshape(-1)


def _check_step(start_step: int) -> None:
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")


class ShardedLoader:
    """What the loaders share: batches per epoch (this rank's share) and ``iterate``; a subclass
    sets ``num_samples``, ``batch_size``, ``train``, ``shard``, ``world_size`` and implements ``_batches``."""

    def __len__(self) -> int:
        return _num_batches(self.num_samples if self.train else len(self.shard), self.batch_size, self.train,
                            self.world_size)

    def iterate(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """Yield (images, labels, index) batches of ``epoch``, skipping the first ``start_step``."""
        _check_step(start_step)
        return self._batches(epoch, start_step)

    def _batches(self, epoch: int, start_step: int) -> Iterator[Batch]:
        raise NotImplementedError


class FastLoader(ShardedLoader):
    """Whole split on the device; batched gather, crop, flip and normalise (train: shuffled, drop_last)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                 batch_size: int, device: torch.device | str, train: bool, seed: int = 0, augment: bool = True,
                 channels_last: bool = False, rank: int = 0, world_size: int = 1,
                 views: Sequence[str] = ("weak",)) -> None:
        self.device = torch.device(device)
        self.views = check_views(views, train)
        self.num_samples = int(labels.shape[0])
        self.images = images.to(self.device).contiguous()  # the one host-to-device copy
        self.labels = labels.to(self.device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.batch_size = batch_size
        self.train = train
        self.augment = augment and train
        self.seed = seed
        self.channels_last = channels_last
        self.world_size = world_size
        self.shard = test_shard(self.num_samples, rank, world_size)  # test: the samples this rank evaluates
        self.positions = rank_positions(self.num_samples, batch_size, rank, world_size).to(self.device)
        self._yield_view_ids = False  # with_view_ids()

    def with_view_ids(self) -> FastLoader:
        """For a run that reads a teacher bank: from now on a training batch's ``index`` is (B, 2), each
        row (sample, view) with the view numbered as dataset.teacher_bank.view_ids numbers it."""
        self._yield_view_ids = True
        return self

    def _batches(self, epoch: int, start_step: int) -> Iterator[Batch]:
        strong: StrongParams | None = None
        if self.train:
            generator = epoch_generator(self.seed, epoch)
            order = torch.randperm(self.num_samples, generator=generator).to(self.device)
            if self.augment:  # one crop corner and flip per position in the epoch, drawn up front
                offsets = torch.randint(0, 2 * PADDING + 1, (self.num_samples, 2), generator=generator)
                flips = torch.rand(self.num_samples, generator=generator) < 0.5
                offsets, flips = offsets.to(self.device), flips.to(self.device)
            if "strong" in self.views:  # drawn after the weak view's numbers, which stay as they were
                strong = draw_strong_params(self.num_samples, generator, self.images.shape[-1], PADDING)
                strong = strong.to(self.device)
        else:
            order = torch.arange(self.shard.start, self.shard.stop, device=self.device)
        for step in range(start_step, len(self)):
            window = slice(step * self.batch_size, (step + 1) * self.batch_size)
            positions = self.positions[window] if self.train else window
            index = order[positions]
            raw = self.images.index_select(0, index)
            views = {"weak": random_crop_flip(raw, offsets[positions], flips[positions]) if self.augment else raw}
            if strong is not None:
                views["strong"] = strong_view(raw, strong[positions])
            images = tuple(self._finish(views[name]) for name in self.views)
            labels = self.labels.index_select(0, index)
            if self._yield_view_ids and self.augment:
                index = torch.stack((index, view_ids(offsets[positions], flips[positions])), dim=1)
            yield images if len(images) > 1 else images[0], labels, index

    def _finish(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 -> normalised float32, in the requested memory format."""
        images = normalize(images, self.mean, self.std)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images


class _ClassicDataset(Dataset):
    """uint8 images -> PIL -> torchvision transforms; returns (image, label, index).

    A key is an index, or (index, seed) to seed the random transforms of that one item, so the
    augmentation depends on neither the worker count nor earlier epochs.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Any) -> None:
        self.pixels = images.permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, 3) for PIL
        self.labels = labels.tolist()
        self.transform = transform  # one transform, or a tuple of them (one per view: a tuple of tensors)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, int, int]:
        index, item_seed = key if isinstance(key, tuple) else (key, None)
        image = Image.fromarray(np.asarray(self.pixels[index]))
        if item_seed is None:
            tensor = self._apply(image)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(item_seed)  # CPU only; torch.manual_seed costs ~70 us
                tensor = self._apply(image)
        return tensor, self.labels[index], index

    def _apply(self, image: Image.Image) -> Any:
        if isinstance(self.transform, tuple):
            return tuple(transform(image) for transform in self.transform)
        return self.transform(image)


class _StrongTransform:
    """PIL image -> normalised float32 (3, H, W) strong view, its numbers drawn from torch's default
    generator (seeded per item by ``_ClassicDataset``)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None]
        params = draw_strong_params(1, None, pixels.shape[-1], PADDING)
        return normalize(strong_view(pixels, params)[0], self.mean, self.std)


class _KeySampler(Sampler):
    """Yields the keys set for the coming epoch (the DataLoader may keep its workers across epochs)."""

    def __init__(self) -> None:
        self.keys: list[Any] = []

    def __iter__(self) -> Iterator[Any]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class ClassicLoader(ShardedLoader):
    """The RepDistiller pipeline: DataLoader workers, PIL RandomCrop(32, padding=4) + flip, ToTensor, Normalize."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                 batch_size: int, device: torch.device | str, train: bool, num_workers: int = 2, seed: int = 0,
                 augment: bool = True, channels_last: bool = False, rank: int = 0, world_size: int = 1,
                 views: Sequence[str] = ("weak",)) -> None:
        self.device = torch.device(device)
        self.views = check_views(views, train)
        self.batch_size = batch_size
        self.num_samples = int(labels.shape[0])
        self.train = train
        self.augment = augment and train
        self.seed = seed
        self.channels_last = channels_last
        self.world_size = world_size
        self.shard = test_shard(self.num_samples, rank, world_size)
        self.positions = rank_positions(self.num_samples, batch_size, rank, world_size).tolist()
        from torchvision import transforms  # ~3 s to import (it loads torch._dynamo): only this loader needs it

        steps: list[Any] = [transforms.RandomCrop(images.shape[-1], padding=PADDING),
                            transforms.RandomHorizontalFlip()] if self.augment else []
        weak = transforms.Compose(steps + [transforms.ToTensor(), transforms.Normalize(mean, std)])
        by_view = {"weak": weak, "strong": _StrongTransform(mean, std)}
        transform = by_view["weak"] if self.views == ("weak",) else tuple(by_view[name] for name in self.views)
        self._sampler = _KeySampler()
        self._loader = DataLoader(
            _ClassicDataset(images, labels, transform), batch_size=batch_size, sampler=self._sampler,
            num_workers=num_workers, pin_memory=self.device.type == "cuda", drop_last=train,
            persistent_workers=num_workers > 0,
            generator=torch.Generator().manual_seed(seed),  # keeps the global RNG untouched
        )

    def _batches(self, epoch: int, start_step: int) -> Iterator[Batch]:
        randomised = self.augment or "strong" in self.views  # items seeded: same draws for any worker count
        self._sampler.keys = epoch_keys(self.num_samples, self.seed, epoch, self.train, randomised,
                                        self.positions, self.shard)[start_step * self.batch_size:]
        for images, labels, index in self._loader:
            images = tuple(self._finish(view) for view in images) if isinstance(images, list) else self._finish(images)
            yield images, labels.to(self.device, non_blocking=True), index.to(self.device, non_blocking=True)

    def _finish(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images


def epoch_keys(num_samples: int, seed: int, epoch: int, train: bool, augment: bool, positions: list[int],
               shard: range) -> list[Any]:
    """Dataset keys this rank loads in ``epoch``, in order: sample index, or (index, augmentation seed).

    Train: the (seed, epoch) permutation at this rank's ``positions``; test: the ``shard`` in order.
    """
    if not train:
        return list(shard)
    generator = epoch_generator(seed, epoch)
    order = torch.randperm(num_samples, generator=generator).tolist()
    if augment:
        item_seeds = torch.randint(0, 2**62, (num_samples,), generator=generator).tolist()
        return [(order[p], item_seeds[p]) for p in positions]
    return [order[p] for p in positions]
