"""Datasets as in-memory uint8 tensors (`load_dataset`) and device batch loaders (`make_loaders`).

To add a dataset: write ``dataset/<name>.py`` with ``load_<name>(data_folder, download=True) -> ImageData``
and add one line to ``DATASETS``.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from dataset.base import DatasetError, ImageData
from dataset.cifar10 import load_cifar10
from dataset.cifar100 import load_cifar100
from dataset.digits import load_digits
from dataset.loaders import VIEWS, ClassicLoader, FastLoader, Loader, TestLoader, TrainLoader
from dataset.stl10 import load_stl10
from dataset.tinyimagenet import load_tinyimagenet

DATASETS: dict[str, Callable[..., ImageData]] = {
    "cifar100": load_cifar100,
    "cifar10": load_cifar10,
    "digits": load_digits,
    "stl10": load_stl10,
    "tinyimagenet": load_tinyimagenet,
}

LOADERS = ("fast", "classic")
# Classes of each dataset, known before it is loaded (ImageNet's come from its folders).
CLASS_COUNTS: dict[str, int] = {"cifar100": 100, "cifar10": 10, "digits": 10, "stl10": 10, "tinyimagenet": 200}

__all__ = ["CLASS_COUNTS", "DATASETS", "LOADERS", "VIEWS", "ClassicLoader", "DatasetError", "FastLoader", "ImageData", "Loader",
           "TestLoader", "TrainLoader", "load_dataset", "make_loaders"]


def load_dataset(name: str, data_folder: str | Path, download: bool = True) -> ImageData:
    """Load dataset ``name`` from ``data_folder`` (official on-disk layout); DatasetError says how to fix a miss."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name](data_folder, download=download)


def make_loaders(data: ImageData, batch_size: int, device: torch.device | str, loader: str = "fast",
                 num_workers: int = 2, seed: int = 0, augment: bool = True,
                 channels_last: bool = False, rank: int = 0, world_size: int = 1,
                 views: tuple[str, ...] = ("weak",)) -> tuple[TrainLoader, TestLoader]:
    """Build the (train, test) loaders: train shuffled per (seed, epoch), augmented, drop_last; test in order.

    ``loader`` is 'fast' (data on the device, batched augmentation; ignores num_workers) or 'classic'
    (torchvision DataLoader with ``num_workers`` workers). With ``world_size`` > 1 each loader yields
    rank ``rank``'s share of every global batch (see dataset/loaders.py). ``views`` (names from
    ``VIEWS``) are the augmented views of each training image; with more than one, the train loader
    yields a tuple of image tensors, one per view.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    common = dict(mean=data.mean, std=data.std, batch_size=batch_size, device=device, seed=seed,
                  augment=augment, channels_last=channels_last, rank=rank, world_size=world_size)
    if loader == "fast":
        return (FastLoader(data.train_images, data.train_labels, train=True, views=views, **common),
                FastLoader(data.test_images, data.test_labels, train=False, **common))
    if loader == "classic":
        return (ClassicLoader(data.train_images, data.train_labels, train=True, num_workers=num_workers, views=views,
                              **common),
                ClassicLoader(data.test_images, data.test_labels, train=False, num_workers=num_workers, **common))
    raise ValueError(f"unknown loader {loader!r}; choose one of {', '.join(LOADERS)}")
