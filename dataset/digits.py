"""Offline demo data: scikit-learn's bundled 8x8 handwritten digits, upscaled to 3 x 32 x 32."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dataset.base import ImageData, resize_uint8

NUM_CLASSES = 10
TEST_SIZE = 0.2
SPLIT_SEED = 0


def load_digits(data_folder: str | Path | None = None, download: bool = True) -> ImageData:
    """Load the 1,797 sklearn digits: fixed stratified 80/20 split, mean/std of the train split.

    Needs no files and no network; ``data_folder`` and ``download`` are accepted for a uniform signature.
    """
    from sklearn.datasets import load_digits as sklearn_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_load_digits()
    pixels = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # values 0..16 -> 0..255
    small = torch.from_numpy(pixels).unsqueeze(1)  # (N, 1, 8, 8)
    images = resize_uint8(small).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    train_index, test_index = train_test_split(np.arange(len(labels)), test_size=TEST_SIZE,
                                               random_state=SPLIT_SEED, stratify=bunch.target)
    train_index, test_index = torch.from_numpy(train_index), torch.from_numpy(test_index)
    train_images = images[train_index].contiguous()
    scaled = train_images.double().div(255).transpose(0, 1).reshape(3, -1)
    mean = tuple(float(value) for value in scaled.mean(dim=1))
    std = tuple(float(value) for value in scaled.std(dim=1, unbiased=False))
    return ImageData("digits", NUM_CLASSES, mean, std, train_images, labels[train_index],
                     images[test_index].contiguous(), labels[test_index])
