"""Shared, session-scoped fixtures: small generated datasets in their official on-disk formats."""
from __future__ import annotations

import os
from pathlib import Path

# One CPU thread per process (this one and the entry scripts it starts): the tests' batches are tiny, so
# a second thread gains little, and on a busy machine threads that wait on each other made runs 5x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

from datagen import write_cifar100, write_stl10, write_tinyimagenet_raw, zip_tree


@pytest.fixture(scope="session")
def cifar_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_folder holding cifar-100-python/{train,test,meta} (500 train / 200 test images)."""
    return write_cifar100(tmp_path_factory.mktemp("cifar_data"), n_train=500, n_test=200, seed=0)


@pytest.fixture(scope="session")
def stl10_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_folder holding stl10_binary/ (100 train / 50 test 96x96 images)."""
    return write_stl10(tmp_path_factory.mktemp("stl10_data"), n_train=100, n_test=50, seed=0)


@pytest.fixture(scope="session")
def tinyimagenet_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-imagenet-200.zip in the official raw layout (3 classes, 4 train / 2 val images each)."""
    source = write_tinyimagenet_raw(tmp_path_factory.mktemp("tinyimagenet_src"))
    return zip_tree(source, tmp_path_factory.mktemp("tinyimagenet_zip") / "tiny-imagenet-200.zip")


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    """Every test starts from the same RNG state, so random inputs cannot make a test flaky."""
    import random

    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
