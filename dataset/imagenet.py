"""ImageNet (ILSVRC-2012) from ``<data_folder>/imagenet/{train,val}/<wnid>/*.JPEG``, streamed from disk.

Unlike the small datasets (uint8 tensors in memory), ImageNet is read per batch: DataLoader
workers read and decode the JPEGs (``torchvision.io``) and apply the standard transforms
(train: RandomResizedCrop(image_size) + horizontal flip; val: resize to image_size * 256/224 then
center crop), so only uint8 batches cross to the device, where they are normalised. With
``decode='device'`` workers only read the files and choose the crops; the JPEGs are decoded in
batches on the training device (nvjpeg on CUDA).

The loader follows the protocol of dataset/loaders.py: ``len``, ``num_samples``, ``batch_size`` and
``iterate(epoch, start_step)`` yielding ``(images, labels, index)`` on the device, with the shuffle
and every crop drawn from (seed, epoch) only, so resumed and multi-process runs see the same
batches as an uninterrupted single process.
"""
from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file
from torchvision.transforms.v2 import functional as TF

from dataset.base import DatasetError
from dataset.loaders import (Batch, ShardedLoader, _KeySampler, epoch_keys, normalize, rank_positions,
    test_shard)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EXTENSIONS = (".jpeg", ".jpg", ".png")
CROP_SCALE = (0.08, 1.0)  # RandomResizedCrop defaults
CROP_RATIO = (3 / 4, 4 / 3)
RESIZE_RATIO = 256 / 224  # validation: resize the shorter side to image_size * 256/224, then center crop
JPEG_MAGIC = b"\xff\xd8\xff"


Crop = tuple[int, int, int, int, bool] | None  # (top, left, height, width, flip) or None: val resize + center crop


@dataclass
class FolderData:
    """An image-folder dataset: file paths and int64 labels per split, plus normalisation constants."""

    name: str
    classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train_files: list[str]
    train_labels: torch.Tensor
    test_files: list[str]
    test_labels: torch.Tensor
    content_digest: dict[str, str] | None = None  # {'train', 'test'}: set when a run loads it (dataset/digest.py)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_train(self) -> int:
        """Number of training images (the CRD memory size)."""
        return len(self.train_files)

    @property
    def num_test(self) -> int:
        return len(self.test_files)


def _scan(split_dir: Path, classes: list[str]) -> tuple[list[str], torch.Tensor]:
    """Image paths under ``split_dir/<class>/`` (sorted) and their class indices."""
    files: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        folder = split_dir / name
        if not folder.is_dir():
            continue
        names = sorted(entry.name for entry in os.scandir(folder)
                       if entry.is_file() and entry.name.lower().endswith(EXTENSIONS))
        files += [str(folder / file) for file in names]
        labels += [label] * len(names)
    return files, torch.tensor(labels, dtype=torch.int64)


def load_imagenet(data_folder: str | Path) -> FolderData:
    """Index ``<data_folder>/imagenet/{train,val}/<wnid>/*.JPEG`` (classes: the sorted train folder names)."""
    root = Path(data_folder) / "imagenet"
    layout = (f"--dataset imagenet reads '{root}/train/<wnid>/*.JPEG' and '{root}/val/<wnid>/*.JPEG' (the "
              "ILSVRC-2012 images, validation images sorted into their class folders, e.g. with the widely used "
              "valprep.sh).")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DatasetError(f"{layout} The folder '{root / split}' does not exist. Put ImageNet there, link it "
                               "(ln -s /path/to/imagenet <data_folder>/imagenet), or pass the --data_folder that holds "
                               "the 'imagenet' folder.")
    classes = sorted(entry.name for entry in os.scandir(root / "train") if entry.is_dir())
    unknown = sorted({entry.name for entry in os.scandir(root / "val") if entry.is_dir()} - set(classes))
    if unknown:
        raise DatasetError(f"{layout} The validation folder has classes that training lacks ({', '.join(unknown[:3])}"
                           f"{' ...' if len(unknown) > 3 else ''}); both splits must use the same <wnid> folders.")
    train_files, train_labels = _scan(root / "train", classes)
    test_files, test_labels = _scan(root / "val", classes)
    for split, files in (("train", train_files), ("val", test_files)):
        if not files:
            raise DatasetError(f"{layout} No images were found under '{root / split}'/<wnid>/ (extensions "
                               f"{', '.join(EXTENSIONS)}). If the validation images lie flat in 'val', sort them "
                               "into class folders first.")
    return FolderData("imagenet", classes, IMAGENET_MEAN, IMAGENET_STD, train_files, train_labels, test_files,
                      test_labels)


def random_resized_crop(height: int, width: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) of torchvision's RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3), drawn from ``generator``."""
    area = height * width
    log_low, log_high = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for _ in range(10):
        target = area * float(torch.empty(()).uniform_(*CROP_SCALE, generator=generator))
        aspect = math.exp(float(torch.empty(()).uniform_(log_low, log_high, generator=generator)))
        crop_w, crop_h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(torch.randint(0, height - crop_h + 1, (), generator=generator))
            left = int(torch.randint(0, width - crop_w + 1, (), generator=generator))
            return top, left, crop_h, crop_w
    ratio = width / height  # fallback: the largest central crop within the ratio range
    crop_w, crop_h = ((width, round(width / CROP_RATIO[0])) if ratio < CROP_RATIO[0] else
        (round(height * CROP_RATIO[1]), height) if ratio > CROP_RATIO[1] else (width, height))
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def choose_crop(height: int, width: int, item_seed: int | None) -> Crop:
    """The augmentation of one training image (from its own seed), or None for validation."""
    if item_seed is None:
        return None
    generator = torch.Generator().manual_seed(item_seed)
    top, left, crop_h, crop_w = random_resized_crop(height, width, generator)
    flip = bool(torch.rand((), generator=generator) < 0.5)
    return top, left, crop_h, crop_w, flip


def apply_crop(image: torch.Tensor, crop: Crop, size: int) -> torch.Tensor:
    """uint8 (3, H, W) -> uint8 (3, size, size): the chosen crop resized (+ flip), or resize + center crop."""
    if crop is None:
        image = TF.resize(image, [round(size * RESIZE_RATIO)], antialias=True)
        return TF.center_crop(image, [size, size])
    top, left, crop_h, crop_w, flip = crop
    image = TF.resized_crop(image, top, left, crop_h, crop_w, [size, size], antialias=True)
    return image.flip(-1) if flip else image


@contextlib.contextmanager
def _quiet_codecs() -> Iterator[None]:
    """torchvision 0.29 marks its image codecs deprecated in favour of TorchCodec (not a dependency
    here); they work, and a warning per image would flood the log."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The image decoding", category=DeprecationWarning)
        yield


class _ImageFiles(Dataset):
    """Key (index[, augmentation seed]) -> (uint8 (3, S, S) image, label, index).

    With ``decode_in_worker`` False, RGB JPEGs come back undecoded as (file bytes, crop) for the
    device to decode; other files (greyscale, CMYK, PNG) are still decoded here.
    """

    def __init__(self, files: list[str], labels: torch.Tensor, size: int, decode_in_worker: bool) -> None:
        self.files = files
        self.labels = labels.tolist()
        self.size = size
        self.decode_in_worker = decode_in_worker

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, int, int]:
        index, item_seed = key if isinstance(key, tuple) else (key, None)
        path = self.files[index]
        with _quiet_codecs():
            data = read_file(path)
            if not self.decode_in_worker and bytes(data[:3].tolist()) == JPEG_MAGIC:
                with Image.open(path) as header:  # reads the header only
                    width, height, mode = header.width, header.height, header.mode
                if mode == "RGB":
                    # a copy: read_file's file-mapped storage cannot be sent to the main process
                    return (data.clone(), choose_crop(height, width, item_seed)), self.labels[index], index
            image = decode_image(data, mode=ImageReadMode.RGB)
        crop = choose_crop(image.shape[-2], image.shape[-1], item_seed)
        return apply_crop(image, crop, self.size), self.labels[index], index


def _as_lists(items: list[tuple[Any, int, int]]) -> tuple[list[Any], torch.Tensor, torch.Tensor]:
    images, labels, index = zip(*items)
    return list(images), torch.tensor(labels), torch.tensor(index)


class ImageFolderLoader(ShardedLoader):
    """Batches of an image-folder split: worker decode + crops, uint8 to the device, normalise there."""

    def __init__(self, files: list[str], labels: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                 batch_size: int, device: torch.device | str, train: bool, image_size: int = 224,
                 num_workers: int = 8, seed: int = 0, decode: str = "workers", channels_last: bool = False,
                 rank: int = 0, world_size: int = 1) -> None:
        if decode not in ("workers", "device"):
            raise ValueError(f"decode must be 'workers' or 'device', got {decode!r}")
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.num_samples = len(files)
        self.train = train
        self.seed = seed
        self.image_size = image_size
        self.channels_last = channels_last
        self.world_size = world_size
        self.decode_on_device = decode == "device"
        self.shard = test_shard(self.num_samples, rank, world_size)
        self.positions = rank_positions(self.num_samples, batch_size, rank, world_size).tolist()
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self._sampler = _KeySampler()
        self._loader = DataLoader(
            _ImageFiles(files, labels, image_size, decode_in_worker=not self.decode_on_device),
            batch_size=batch_size, sampler=self._sampler, num_workers=num_workers,
            pin_memory=self.device.type == "cuda" and not self.decode_on_device,
            persistent_workers=num_workers > 0, prefetch_factor=4 if num_workers > 0 else None,
            collate_fn=_as_lists if self.decode_on_device else None)

    def _batches(self, epoch: int, start_step: int) -> Iterator[Batch]:
        self._sampler.keys = epoch_keys(self.num_samples, self.seed, epoch, self.train, self.train,
                                        self.positions, self.shard)[start_step * self.batch_size:]
        for images, labels, index in self._loader:
            if self.decode_on_device:
                images = self._decode_on_device(images)
            images = normalize(images.to(self.device, non_blocking=True), self.mean, self.std)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, labels.to(self.device, non_blocking=True), index.to(self.device, non_blocking=True)

    def _decode_on_device(self, items: list[Any]) -> torch.Tensor:
        """Decode the batch's undecoded JPEGs in one call on the device, crop each, stack with the rest."""
        pending = [i for i, item in enumerate(items) if isinstance(item, tuple)]
        if pending:
            with _quiet_codecs():
                decoded = decode_jpeg([items[i][0] for i in pending], mode=ImageReadMode.RGB, device=self.device)
            for i, image in zip(pending, decoded):
                items[i] = apply_crop(image, items[i][1], self.image_size)
        return torch.stack([item.to(self.device) for item in items])


def make_imagenet_loaders(data: FolderData, batch_size: int, device: torch.device | str, image_size: int = 224,
                          num_workers: int = 8, seed: int = 0, decode: str = "workers", channels_last: bool = False,
                          rank: int = 0, world_size: int = 1) -> tuple[ImageFolderLoader, ImageFolderLoader]:
    """(train, val) loaders: train shuffled per (seed, epoch) with RandomResizedCrop + flip, drop_last; val in order."""
    common = dict(mean=data.mean, std=data.std, batch_size=batch_size, device=device, image_size=image_size,
                  num_workers=num_workers, seed=seed, decode=decode, channels_last=channels_last, rank=rank,
                  world_size=world_size)
    return (ImageFolderLoader(data.train_files, data.train_labels, train=True, **common),
            ImageFolderLoader(data.test_files, data.test_labels, train=False, **common))
