"""digits (bundled), STL-10 (official binaries) and Tiny ImageNet (JPEG tree + tensor cache)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets
from PIL import Image

import dataset.tinyimagenet as tinyimagenet
from datagen import class_images, write_stl10_split, write_tinyimagenet, write_tinyimagenet_raw
from dataset import DatasetError, ImageData, load_dataset, make_loaders
from dataset.base import resize_uint8

# --- digits -------------------------------------------------------------------------------------


def test_digits_split_is_fixed_stratified_and_normalised() -> None:
    data = load_dataset("digits", "ignored")
    assert data.num_classes == 10
    assert data.train_images.shape == (1437, 3, 32, 32) and data.test_images.shape == (360, 3, 32, 32)
    assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.int64
    assert torch.equal(data.train_images[:, 0], data.train_images[:, 2])  # grey, replicated
    assert int(data.train_images.max()) == 255 and int(data.train_images.min()) == 0
    train_counts = torch.bincount(data.train_labels, minlength=10)
    test_counts = torch.bincount(data.test_labels, minlength=10)
    assert ((test_counts.float() - 0.2 * (train_counts + test_counts)).abs() <= 1).all()  # stratified
    pixels = data.train_images.double().div(255)
    assert data.mean[0] == pytest.approx(float(pixels.mean()), abs=1e-9)
    assert data.std[0] == pytest.approx(float(pixels.std(unbiased=False)), abs=1e-9)
    again = load_dataset("digits", "elsewhere")
    assert torch.equal(again.test_images, data.test_images) and torch.equal(again.train_labels, data.train_labels)


def test_digits_loaders_run() -> None:
    train, test = make_loaders(load_dataset("digits", "."), 128, "cpu")
    images, labels, index = next(train.iterate(0))
    assert images.shape == (128, 3, 32, 32) and len(train) == 1437 // 128 and len(test) == 3


# --- STL-10 -------------------------------------------------------------------------------------


def test_stl10_loads_generated_binaries(stl10_folder: Path) -> None:
    data = load_dataset("stl10", stl10_folder, download=False)
    assert data.num_classes == 10 and data.mean == (0.4467, 0.4398, 0.4066)
    assert data.train_images.shape == (100, 3, 32, 32) and data.test_images.shape == (50, 3, 32, 32)
    assert data.train_images.dtype == torch.uint8 and data.train_images.is_contiguous()
    raw_labels = np.fromfile(stl10_folder / "stl10_binary" / "train_y.bin", dtype=np.uint8)
    assert torch.equal(data.train_labels, torch.from_numpy(raw_labels.astype(np.int64) - 1))
    assert set(data.train_labels.tolist()) == set(range(10))


def test_stl10_column_major_images_come_out_upright(tmp_path: Path) -> None:
    image = np.zeros((1, 3, 96, 96), dtype=np.uint8)
    image[0, 0, :48, :] = 255  # red: top half
    image[0, 1, :, :24] = 255  # green: left quarter
    image[0, 2, 80:, 60:] = 200  # blue: a bottom-right block
    images = np.concatenate([image, class_images(np.arange(3), 96, 10)])
    for split in ("train", "test"):
        write_stl10_split(tmp_path, split, images, np.array([3, 0, 1, 2]))
    data = load_dataset("stl10", tmp_path, download=False)
    upright = data.train_images[0].float()
    assert upright[0, :15].mean() > 250 and upright[0, 17:].mean() < 5
    assert upright[1, :, :7].mean() > 250 and upright[1, :, 9:].mean() < 5
    assert upright[2, 28:, 21:].mean() > 190 and upright[2, :26].mean() < 5
    assert torch.equal(data.train_images, resize_uint8(torch.from_numpy(images)))
    assert data.train_labels.tolist() == [3, 0, 1, 2]


def test_stl10_missing_or_truncated_raises(stl10_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DatasetError, match="stl10_binary"):
        load_dataset("stl10", tmp_path / "empty", download=False)

    def offline(*args, **kwargs):
        raise OSError("no route to host")

    monkeypatch.setattr(torchvision.datasets, "STL10", offline)
    with pytest.raises(DatasetError, match="no route to host"):
        load_dataset("stl10", tmp_path / "empty", download=True)
    shutil.copytree(stl10_folder / "stl10_binary", tmp_path / "stl10_binary")
    target = tmp_path / "stl10_binary" / "test_X.bin"
    target.write_bytes(target.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="test_X.bin"):
        load_dataset("stl10", tmp_path, download=False)


# --- Tiny ImageNet ------------------------------------------------------------------------------


def _assert_same(a: ImageData, b: ImageData) -> None:
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_tinyimagenet_sorted_tree_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_tinyimagenet(tmp_path, n_classes=3, n_train_per_class=4, n_val_per_class=2, layout="sorted")
    cache = root / "cache_32x32.pt"
    data = load_dataset("tinyimagenet", tmp_path)
    assert data.name == "tinyimagenet" and data.num_classes == 3
    assert data.train_images.shape == (12, 3, 32, 32) and data.test_images.shape == (6, 3, 32, 32)
    assert data.train_labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4  # classes = sorted wnids
    assert sorted(data.test_labels.tolist()) == [0, 0, 1, 1, 2, 2]
    grey = data.train_images[0]  # written as a single-channel JPEG
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    with Image.open(root / "train" / "n01443537" / "n01443537_1.JPEG") as picture:
        expected = resize_uint8(torch.from_numpy(np.array(picture.convert("RGB"))).permute(2, 0, 1)[None])
    assert torch.equal(data.train_images[1], expected[0])
    assert cache.is_file() and not list(root.glob(".*.tmp"))

    def no_decoding(paths):
        raise AssertionError("the cache should have been used")

    with monkeypatch.context() as patch:
        patch.setattr(tinyimagenet, "_decode_images", no_decoding)
        _assert_same(load_dataset("tinyimagenet", tmp_path), data)

    # Change one source image: the fingerprint changes and the cache is rebuilt.
    changed = root / "train" / "n01444537" / "n01444537_2.JPEG"
    Image.new("RGB", (64, 64), (255, 0, 0)).save(changed)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    decoded = []
    real_decode = tinyimagenet._decode_images
    monkeypatch.setattr(tinyimagenet, "_decode_images", lambda paths: decoded.append(len(paths)) or real_decode(paths))
    rebuilt = load_dataset("tinyimagenet", tmp_path)
    assert decoded == [12, 6]
    assert rebuilt.train_images[6, 0].min() >= 250 and rebuilt.train_images[6, 1].max() <= 5
    assert torch.equal(rebuilt.train_images[:6], data.train_images[:6])
    assert torch.equal(torch.load(cache, weights_only=True)["train_images"], rebuilt.train_images)


def test_tinyimagenet_raw_zip_layout_matches_sorted(tmp_path: Path) -> None:
    raw = load_dataset("tinyimagenet", write_tinyimagenet_raw(tmp_path / "raw").parent)
    tidy = load_dataset("tinyimagenet", write_tinyimagenet(tmp_path / "sorted", layout="sorted").parent)
    assert torch.equal(raw.train_images, tidy.train_images) and torch.equal(raw.train_labels, tidy.train_labels)
    assert sorted(raw.test_labels.tolist()) == sorted(tidy.test_labels.tolist())


def test_tinyimagenet_corrupt_cache_is_rebuilt(tmp_path: Path) -> None:
    root = write_tinyimagenet(tmp_path, layout="sorted")
    first = load_dataset("tinyimagenet", tmp_path)
    (root / "cache_32x32.pt").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="rebuilding"):
        _assert_same(load_dataset("tinyimagenet", tmp_path), first)


def test_tinyimagenet_missing_points_to_the_script(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="get_tinyimagenet.sh"):
        load_dataset("tinyimagenet", tmp_path)
    (tmp_path / "tiny-imagenet-200" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match="get_tinyimagenet.sh"):
        load_dataset("tinyimagenet", tmp_path)
