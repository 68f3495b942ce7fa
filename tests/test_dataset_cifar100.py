"""CIFAR-100 loading from the official pickles, and the two loader pipelines (fast and classic)."""
from __future__ import annotations

import math
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets
from PIL import Image
from torchvision import transforms

from datagen import write_cifar100
from dataset import DATASETS, DatasetError, ImageData, load_dataset, make_loaders
from dataset.cifar100 import MEAN, STD

PIPELINES = ("fast", "classic")


@pytest.fixture(scope="module")
def cifar(cifar_folder: Path) -> ImageData:
    return load_dataset("cifar100", cifar_folder, download=False)


def _collect(loader, epoch: int, start_step: int = 0) -> list[tuple[torch.Tensor, ...]]:
    return [tuple(tensor.clone() for tensor in batch) for batch in loader.iterate(epoch, start_step)]


def _make(data: ImageData, pipeline: str, **kwargs):
    kwargs.setdefault("num_workers", 0)
    return make_loaders(data, kwargs.pop("batch_size", 64), "cpu", loader=pipeline, **kwargs)


# --- loading ------------------------------------------------------------------------------------

def test_registry_names() -> None:
    assert set(DATASETS) == {"cifar100", "cifar10", "digits", "stl10", "tinyimagenet"}


def test_loads_generated_pickles(cifar: ImageData, cifar_folder: Path) -> None:
    assert cifar.name == "cifar100" and cifar.num_classes == 100
    assert cifar.mean == MEAN and cifar.std == STD
    assert cifar.train_images.shape == (500, 3, 32, 32) and cifar.test_images.shape == (200, 3, 32, 32)
    assert cifar.train_images.dtype == torch.uint8 and cifar.train_images.is_contiguous()
    assert cifar.train_labels.dtype == torch.int64 and cifar.train_labels.shape == (500,)
    assert cifar.test_labels.shape == (200,)
    with open(cifar_folder / "cifar-100-python" / "train", "rb") as handle:
        raw = pickle.load(handle, encoding="latin1")
    assert torch.equal(cifar.train_labels, torch.tensor(raw["fine_labels"]))
    # 'data' rows are CHW row-major: the first 1024 bytes are the red plane.
    assert torch.equal(cifar.train_images[7, 0].flatten(), torch.from_numpy(raw["data"][7, :1024]))
    assert torch.equal(cifar.train_images[7, 2, 31], torch.from_numpy(raw["data"][7, 3072 - 32:]))


def test_generated_images_carry_a_learnable_class_signal(cifar: ImageData) -> None:
    pixels = cifar.train_images.float().flatten(1)
    centroids = torch.stack([pixels[cifar.train_labels == label].mean(0) for label in range(100)])
    predicted = torch.cdist(cifar.test_images.float().flatten(1), centroids).argmin(1)
    assert (predicted == cifar.test_labels).float().mean() > 0.5  # chance is 0.01


def test_str_and_bytes_keys_load_the_same(tmp_path: Path) -> None:
    str_data = load_dataset("cifar100", write_cifar100(tmp_path / "str", 50, 20, seed=3), download=False)
    bytes_data = load_dataset("cifar100", write_cifar100(tmp_path / "bytes", 50, 20, seed=3, bytes_keys=True),
                              download=False)
    with open(tmp_path / "bytes" / "cifar-100-python" / "test", "rb") as handle:
        assert b"data" in pickle.load(handle)
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(str_data, field), getattr(bytes_data, field))


def test_missing_offline_raises_with_instructions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def offline(*args, **kwargs):
        calls.append(kwargs)
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    with pytest.raises(DatasetError) as error:
        load_dataset("cifar100", tmp_path / "nothing_here", download=True)
    assert calls and calls[0]["download"] is True
    message = str(error.value)
    assert str(tmp_path / "nothing_here" / "cifar-100-python") in message
    assert "cifar-100-python.tar.gz" in message and "network is unreachable" in message
    assert "\n" not in message

    with pytest.raises(DatasetError, match="download disabled"):
        load_dataset("cifar100", tmp_path / "nothing_here", download=False)
    assert len(calls) == 1


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_shape"])
def test_corrupt_file_raises_naming_it(cifar_folder: Path, tmp_path: Path, damage: str) -> None:
    shutil.copytree(cifar_folder / "cifar-100-python", tmp_path / "cifar-100-python")
    target = tmp_path / "cifar-100-python" / "test"
    if damage == "truncate":
        content = target.read_bytes()
        target.write_bytes(content[: len(content) // 2])
    elif damage == "garbage":
        target.write_bytes(b"this is not a pickle" * 10)
    else:
        with open(target, "wb") as handle:
            pickle.dump({"data": np.zeros((4, 100), np.uint8), "fine_labels": [0, 1, 2, 3]}, handle)
    with pytest.raises(DatasetError, match=str(target)):
        load_dataset("cifar100", tmp_path, download=False)


def test_image_data_rejects_bad_tensors() -> None:
    images = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(ValueError):
        ImageData("x", 2, MEAN, STD, images.float(), torch.zeros(4, dtype=torch.int64), images,
                  torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError):
        ImageData("x", 2, MEAN, STD, images, torch.full((4,), 2), images, torch.zeros(4, dtype=torch.int64))


# --- loaders ------------------------------------------------------------------------------------

@pytest.mark.parametrize("pipeline", PIPELINES)
def test_lengths_drop_last_and_batch_shapes(cifar: ImageData, pipeline: str) -> None:
    train, test = _make(cifar, pipeline, batch_size=64)
    assert (len(train), len(test)) == (500 // 64, math.ceil(200 / 64))
    assert (train.num_samples, test.num_samples, train.batch_size) == (500, 200, 64)
    train_batches, test_batches = _collect(train, 0), _collect(test, 0)
    assert len(train_batches) == len(train) and len(test_batches) == len(test)
    assert all(images.shape == (64, 3, 32, 32) for images, _, _ in train_batches)
    assert [labels.shape[0] for _, labels, _ in test_batches] == [64, 64, 64, 8]
    images, labels, index = train_batches[0]
    assert images.dtype == torch.float32 and labels.dtype == torch.int64 and index.dtype == torch.int64
    seen = torch.cat([index for _, _, index in train_batches])
    assert seen.unique().numel() == 7 * 64  # a permutation, minus the dropped tail
    assert torch.equal(torch.cat([index for _, _, index in test_batches]), torch.arange(200))  # test: in order


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_index_and_labels_match_images(cifar: ImageData, pipeline: str) -> None:
    train, test = _make(cifar, pipeline, augment=False)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    for loader, images_all, labels_all in ((train, cifar.train_images, cifar.train_labels),
                                           (test, cifar.test_images, cifar.test_labels)):
        for images, labels, index in loader.iterate(2):
            assert torch.equal(labels, labels_all[index])
            assert torch.equal(images, images_all[index].float().div(255).sub(mean).div(std))


def test_identity_transform_is_bit_identical_across_pipelines(cifar: ImageData) -> None:
    fast_train, fast_test = _make(cifar, "fast", augment=False)
    classic_train, classic_test = _make(cifar, "classic", augment=False)
    for fast, classic in ((fast_train, classic_train), (fast_test, classic_test)):
        for (fast_images, fast_labels, fast_index), (images, labels, index) in zip(fast.iterate(1), classic.iterate(1)):
            assert torch.equal(fast_index, index) and torch.equal(fast_labels, labels)
            assert torch.equal(fast_images, images)
    # ... and both equal torchvision's own ToTensor + Normalize on the PIL image.
    reference = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    images, _, index = next(fast_test.iterate(0))
    for row in (0, 5, 63):
        pil = Image.fromarray(cifar.test_images[int(index[row])].permute(1, 2, 0).numpy())
        assert torch.equal(images[row], reference(pil))


def _candidates(image: torch.Tensor) -> tuple[torch.Tensor, list[tuple[int, int, bool]]]:
    """All 162 crops of the zero-padded image (offsets in [-4, 4]^2, flipped or not), normalised by hand."""
    padded = torch.zeros(3, 40, 40, dtype=torch.uint8)
    padded[:, 4:36, 4:36] = image
    crops, combos = [], []
    for dy in range(-4, 5):
        for dx in range(-4, 5):
            crop = padded[:, 4 + dy:36 + dy, 4 + dx:36 + dx]
            for flip in (False, True):
                crops.append(crop.flip(-1) if flip else crop)
                combos.append((dy, dx, flip))
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    return (torch.stack(crops).float() / 255 - mean) / std, combos


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_augmentation_draws_exactly_the_162_crop_flip_combos(pipeline: str) -> None:
    image = torch.from_numpy(np.random.default_rng(7).integers(0, 256, (3, 32, 32), dtype=np.uint8))
    repeated = image.expand(800, -1, -1, -1).contiguous()
    labels = torch.zeros(800, dtype=torch.int64)
    data = ImageData("repeated", 1, MEAN, STD, repeated, labels, repeated[:8], labels[:8])
    candidates, combos = _candidates(image)
    by_bytes = {candidate.numpy().tobytes(): combo for candidate, combo in zip(candidates, combos)}
    assert len(by_bytes) == 162  # the random image makes every candidate distinct
    train, _ = _make(data, pipeline, batch_size=200)
    found = []
    for epoch in range(3):
        for images, _, _ in train.iterate(epoch):
            for output in images:  # exact match: cropping and flipping move bytes, never change them
                key = output.contiguous().numpy().tobytes()
                assert key in by_bytes, "an output is not one of the 162 crop/flip candidates"
                found.append(by_bytes[key])
    assert set(found) == set(combos)  # every combination appears, and nothing else can
    flips = sum(flip for _, _, flip in found) / len(found)
    assert 0.4 < flips < 0.6


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_same_seed_and_epoch_give_same_batches(cifar: ImageData, pipeline: str) -> None:
    first = _collect(_make(cifar, pipeline, seed=5)[0], 3)
    second = _collect(_make(cifar, pipeline, seed=5)[0], 3)  # a fresh loader: no hidden state
    assert all(torch.equal(a, b) for batch_a, batch_b in zip(first, second) for a, b in zip(batch_a, batch_b))
    other_epoch = _collect(_make(cifar, pipeline, seed=5)[0], 4)
    other_seed = _collect(_make(cifar, pipeline, seed=6)[0], 3)
    order = torch.cat([index for _, _, index in first])
    assert not torch.equal(order, torch.cat([index for _, _, index in other_epoch]))
    assert not torch.equal(order, torch.cat([index for _, _, index in other_seed]))


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_start_step_skips_exactly(cifar: ImageData, pipeline: str) -> None:
    train, test = _make(cifar, pipeline, seed=1)
    full = _collect(train, 2)
    resumed = _collect(train, 2, start_step=3)
    assert len(resumed) == len(full) - 3
    assert all(torch.equal(a, b) for batch_a, batch_b in zip(full[3:], resumed) for a, b in zip(batch_a, batch_b))
    assert _collect(train, 2, start_step=len(train)) == []
    assert [index[0].item() for _, _, index in test.iterate(0, start_step=2)] == [128, 192]
    with pytest.raises(ValueError):
        train.iterate(0, start_step=-1)


def test_pipelines_share_the_epoch_order(cifar: ImageData) -> None:
    fast = [index for _, _, index in _make(cifar, "fast", seed=2)[0].iterate(7)]
    classic = [index for _, _, index in _make(cifar, "classic", seed=2)[0].iterate(7)]
    assert all(torch.equal(a, b) for a, b in zip(fast, classic))


def test_classic_output_does_not_depend_on_worker_count(cifar: ImageData) -> None:
    in_process, _ = _make(cifar, "classic", batch_size=100, seed=3, num_workers=0)
    workers, _ = _make(cifar, "classic", batch_size=100, seed=3, num_workers=2)
    next(workers.iterate(5))  # an epoch abandoned after one batch leaves nothing behind
    for epoch in (0, 1):  # later epochs reuse the persistent workers
        for batch_a, batch_b in zip(_collect(in_process, epoch), _collect(workers, epoch)):
            assert all(torch.equal(a, b) for a, b in zip(batch_a, batch_b))


def test_loaders_leave_the_global_rng_alone(cifar: ImageData) -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    for pipeline in PIPELINES:
        train, test = _make(cifar, pipeline)
        _collect(train, 0)
        _collect(test, 0)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_channels_last_output(cifar: ImageData, pipeline: str) -> None:
    plain = next(_make(cifar, pipeline)[0].iterate(0))[0]
    images = next(_make(cifar, pipeline, channels_last=True)[0].iterate(0))[0]
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(images, plain)


def test_unknown_names_are_rejected(cifar: ImageData) -> None:
    with pytest.raises(ValueError, match="cifar100"):
        load_dataset("imagenet", ".")
    with pytest.raises(ValueError, match="classic"):
        make_loaders(cifar, 64, "cpu", loader="turbo")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fast_pipeline_on_cuda_matches_cpu(cifar: ImageData) -> None:
    cpu_batches = _collect(make_loaders(cifar, 64, "cpu", seed=4)[0], 1)
    cuda_train, cuda_test = make_loaders(cifar, 64, "cuda", seed=4)
    cuda_batches = _collect(cuda_train, 1)
    for (cpu_images, cpu_labels, cpu_index), (images, labels, index) in zip(cpu_batches, cuda_batches):
        assert images.is_cuda and labels.is_cuda and index.is_cuda
        assert torch.equal(cpu_index, index.cpu()) and torch.equal(cpu_labels, labels.cpu())
        torch.testing.assert_close(images.cpu(), cpu_images, rtol=0, atol=1e-6)
    classic_train, _ = make_loaders(cifar, 64, "cuda", loader="classic", num_workers=0, seed=4, augment=False)
    assert next(classic_train.iterate(0))[0].is_cuda
