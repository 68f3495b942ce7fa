"""CIFAR-10 from the official python pickles: ``<data_folder>/cifar-10-batches-py/``
(data_batch_1..5, test_batch, batches.meta), as the DCD/RRD repository offers it.

Normalised with the CIFAR-100 mean and std, as the DCD/RRD code's CIFAR-10 loaders do (so a run
here reproduces theirs).
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch

from dataset.base import ImageData, ensure_downloaded
from dataset.cifar100 import MEAN as CIFAR100_MEAN
from dataset.cifar100 import STD as CIFAR100_STD
from dataset.cifar100 import missing_cifar_message, read_cifar_pickle

FOLDER = "cifar-10-batches-py"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"  # torchvision's, checked against its MD5
MD5 = "c58f30108f718f92721af3b95e74349a"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
MEAN = CIFAR100_MEAN
STD = CIFAR100_STD
NUM_CLASSES = 10


_missing_message = functools.partial(missing_cifar_message, "CIFAR-10", FOLDER,
                                     "data_batch_1 ... data_batch_5, test_batch", URL, md5=MD5)


def load_cifar10(data_folder: str | Path, download: bool = True) -> ImageData:
    """Load CIFAR-10 (50,000 train in 5 batches / 10,000 test, 10 classes); download it when absent."""
    root = Path(data_folder).expanduser()
    files = [root / FOLDER / name for name in (*TRAIN_FILES, TEST_FILE)]
    ensure_downloaded(files, root, download, _missing_message, "CIFAR10", train=True)
    parts = [read_cifar_pickle(path, "labels", NUM_CLASSES, "CIFAR-10", URL) for path in files]
    train_images = torch.cat([images for images, _ in parts[:-1]])
    train_labels = torch.cat([labels for _, labels in parts[:-1]])
    test_images, test_labels = parts[-1]
    return ImageData("cifar10", NUM_CLASSES, MEAN, STD, train_images, train_labels, test_images, test_labels)
