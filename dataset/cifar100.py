"""CIFAR-100 from the official python pickles: ``<data_folder>/cifar-100-python/{train,test}``."""
from __future__ import annotations

import functools
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dataset.base import DatasetError, ImageData, ensure_downloaded

FOLDER = "cifar-100-python"
URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
MEAN = (0.5071, 0.4867, 0.4408)
STD = (0.2675, 0.2565, 0.2761)
NUM_CLASSES = 100


def missing_cifar_message(name: str, folder: str, files: str, url: str, root: Path, detail: str,
                          md5: str | None = None) -> str:
    """One paragraph: the official python version of CIFAR ``name`` is not in ``root/folder`` (``detail``),
    and how to get it there."""
    checksum = f" (MD5 {md5})" if md5 else ""
    return (f"{name} not found: expected the official python version at {root / folder}/ ({files}; {detail}). "
            f"Download {url}{checksum} and extract it into {root} (e.g. `mkdir -p {root} && curl -L {url} | tar "
            f"-xz -C {root}`), or run with network access so that torchvision downloads it, or point --data_folder "
            f"at the folder that holds {folder}/.")


_missing_message = functools.partial(missing_cifar_message, "CIFAR-100", FOLDER, "train, test", URL)


def read_cifar_pickle(path: Path, label_key: str, num_classes: int, dataset: str,
                      url: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one official CIFAR python pickle (Python 2 dict with 'data' N x 3072 and ``label_key``)
    into uint8 (N, 3, 32, 32) images and int64 labels; DatasetError (what to do) when unreadable."""
    try:
        with open(path, "rb") as handle:
            # Official files were written by Python 2: 'latin1' decodes their str keys and numpy arrays.
            entry: dict[Any, Any] = pickle.load(handle, encoding="latin1")
        entry = {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in entry.items()}
        data = np.asarray(entry["data"])
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except Exception as error:  # truncated/corrupt pickles raise many different exception types
        raise DatasetError(f"{dataset} file {path} is corrupt or not a {dataset} python pickle "
                           f"({type(error).__name__}: {error}). Delete the folder {path.parent} and download "
                           f"it again from {url} (extract into {path.parent.parent}).") from error
    if (data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]
            or (data.size and (data.min() < 0 or data.max() > 255))):
        raise DatasetError(f"{dataset} file {path} has unexpected contents: 'data' {data.dtype} {data.shape} "
                           f"with {labels.shape[0]} '{label_key}' (expected N x 3072 uint8 and N labels). "
                           f"Delete {path.parent} and download it again from {url}.")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(f"{dataset} file {path} has '{label_key}' outside 0..{num_classes - 1}. Delete "
                           f"{path.parent} and download it again from {url}.")
    images = torch.from_numpy(data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(labels)


def _read_split(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one CIFAR-100 pickle into uint8 (N, 3, 32, 32) images and int64 fine labels."""
    return read_cifar_pickle(path, "fine_labels", NUM_CLASSES, "CIFAR-100", URL)


def load_cifar100(data_folder: str | Path, download: bool = True) -> ImageData:
    """Load CIFAR-100 (50,000 train / 10,000 test, 100 fine classes); download it when absent."""
    root = Path(data_folder).expanduser()
    files = [root / FOLDER / "train", root / FOLDER / "test"]
    ensure_downloaded(files, root, download, _missing_message, "CIFAR100", train=True)
    train_images, train_labels = _read_split(files[0])
    test_images, test_labels = _read_split(files[1])
    return ImageData("cifar100", NUM_CLASSES, MEAN, STD, train_images, train_labels, test_images, test_labels)
