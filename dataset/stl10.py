"""STL-10 from the official binaries: ``<data_folder>/stl10_binary/{train,test}_{X,y}.bin``, resized to 32x32."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dataset.base import DatasetError, ImageData, ensure_downloaded, resize_uint8

FOLDER = "stl10_binary"
URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
MEAN = (0.4467, 0.4398, 0.4066)
STD = (0.2603, 0.2566, 0.2712)
NUM_CLASSES = 10
SOURCE_SIZE = 96
FILES = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")


def _missing_message(root: Path, detail: str) -> str:
    return (f"STL-10 not found: expected {', '.join(FILES)} in {root / FOLDER} ({detail}). Download {URL} "
            f"(2.5 GB) and extract it into {root} (e.g. `mkdir -p {root} && curl -L {URL} | tar -xz -C {root}`), "
            f"or run with network access so that torchvision downloads it, or point --data_folder at the "
            f"folder that holds {FOLDER}/.")


def _read_split(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read ``<split>_X.bin`` / ``<split>_y.bin`` into upright uint8 (N, 3, 96, 96) images and 0-based labels."""
    images_path, labels_path = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    image_bytes = 3 * SOURCE_SIZE * SOURCE_SIZE
    raw = np.fromfile(images_path, dtype=np.uint8)
    labels = np.fromfile(labels_path, dtype=np.uint8).astype(np.int64)
    if raw.size % image_bytes or raw.size // image_bytes != labels.size:
        raise DatasetError(f"STL-10 files {images_path} ({raw.size} bytes) and {labels_path} ({labels.size} labels) "
                           f"do not match: expected {image_bytes} bytes per image and one label byte per image, "
                           f"so the download is truncated or corrupt. Delete {folder} and download it again "
                           f"from {URL}.")
    if labels.size and (labels.min() < 1 or labels.max() > NUM_CLASSES):
        raise DatasetError(f"STL-10 labels in {labels_path} must be 1..10. Delete {folder} and download it again "
                           f"from {URL}.")
    # Each image is stored column-major (MATLAB order): read as (C, W, H) and swap the last two axes.
    images = torch.from_numpy(raw.reshape(-1, 3, SOURCE_SIZE, SOURCE_SIZE)).transpose(2, 3)
    return images, torch.from_numpy(labels - 1)


def load_stl10(data_folder: str | Path, download: bool = True) -> ImageData:
    """Load the labelled STL-10 splits (5,000 train / 8,000 test, 10 classes), resized once to 32x32."""
    root = Path(data_folder).expanduser()
    folder = root / FOLDER
    ensure_downloaded([folder / name for name in FILES], root, download, _missing_message, "STL10", split="train")
    train_images, train_labels = _read_split(folder, "train")
    test_images, test_labels = _read_split(folder, "test")
    return ImageData("stl10", NUM_CLASSES, MEAN, STD, resize_uint8(train_images), train_labels,
                     resize_uint8(test_images), test_labels)
