"""What every dataset loader returns (`ImageData`), its error type, and shared image helpers."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from helper.checkpoint import save_checkpoint
from helper.errors import UserError

IMAGE_SIZE = 32  # every split is stored at the CIFAR resolution


class DatasetError(UserError):
    """Missing or unreadable dataset files; the message is one paragraph saying what to do."""


@dataclass
class ImageData:
    """A whole dataset held in memory as uint8 CPU tensors, plus its normalisation constants.

    Images are (N, 3, 32, 32) uint8 and contiguous; labels are (N,) int64 in [0, num_classes).
    """

    name: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    content_digest: dict[str, str] | None = None  # {'train', 'test'}: set when a run loads it (dataset/digest.py)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            expected_shape = (3, IMAGE_SIZE, IMAGE_SIZE)
            if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != expected_shape:
                raise ValueError(f"{self.name}: {split}_images must be uint8 (N, 3, 32, 32), got "
                                 f"{images.dtype} {tuple(images.shape)}")
            if labels.dtype != torch.int64 or labels.shape != (images.shape[0],):
                raise ValueError(f"{self.name}: {split}_labels must be int64 ({images.shape[0]},), got "
                                 f"{labels.dtype} {tuple(labels.shape)}")
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise ValueError(f"{self.name}: {split}_labels outside [0, {self.num_classes})")
            setattr(self, f"{split}_images", images.contiguous())

    @property
    def num_train(self) -> int:
        """Number of training samples (the CRD memory size)."""
        return int(self.train_labels.shape[0])

    @property
    def num_test(self) -> int:
        """Number of test samples."""
        return int(self.test_labels.shape[0])


def ensure_downloaded(files: list[Path], root: Path, download: bool, missing_message: Callable[[Path, str], str],
                      torchvision_dataset: str, **options: Any) -> None:
    """Make sure ``files`` exist: when one is missing, download the dataset into ``root`` with
    ``torchvision.datasets.<torchvision_dataset>(root, download=True, **options)`` (which checks the
    archive's MD5). DatasetError with ``missing_message(root, detail)`` when downloads are off, the
    download fails, or a file is still missing after it."""
    if all(path.is_file() for path in files):
        return
    if not download:
        raise DatasetError(missing_message(root, "download disabled"))
    try:
        import torchvision.datasets

        getattr(torchvision.datasets, torchvision_dataset)(root=str(root), download=True, **options)
    except Exception as error:
        raise DatasetError(missing_message(root, f"the download failed: {type(error).__name__}: {error}")) from error
    if not all(path.is_file() for path in files):
        raise DatasetError(missing_message(root, "the download finished but the files are still missing"))


def resize_uint8(images: torch.Tensor, size: int = IMAGE_SIZE, chunk: int = 1024) -> torch.Tensor:
    """Resize uint8 (N, C, H, W) images to (N, C, size, size): bilinear, antialiased, rounded.

    Works in chunks so that large splits (STL-10's 8,000 96x96 images) never need a full float copy.
    """
    if images.shape[-2:] == (size, size):
        return images.contiguous()
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, images.shape[0], chunk):
        block = images[start:start + chunk].float()
        block = F.interpolate(block, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[start:start + chunk] = block.round_().clamp_(0, 255).to(torch.uint8)
    return out


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temp file beside ``path``, then ``os.replace``: readers never see half a file."""
    save_checkpoint(obj, path)
