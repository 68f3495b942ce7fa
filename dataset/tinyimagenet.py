"""Tiny ImageNet-200 from ``<data_folder>/tiny-imagenet-200`` (as sorted by data/get_tinyimagenet.sh).

JPEGs are decoded and resized to 32x32 once; the uint8 tensors are cached in
``tiny-imagenet-200/cache_32x32.pt``, keyed by a fingerprint of the file list (paths, sizes, mtimes).
"""
from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dataset.base import DatasetError, ImageData, atomic_torch_save, resize_uint8

FOLDER = "tiny-imagenet-200"
CACHE_NAME = "cache_32x32.pt"
CACHE_VERSION = 1
MEAN = (0.4802, 0.4481, 0.3975)
STD = (0.2770, 0.2691, 0.2821)
SUFFIXES = (".jpeg", ".jpg")


def _missing_message(root: Path, detail: str) -> str:
    return (f"Tiny ImageNet-200 not found or incomplete at {root / FOLDER} ({detail}). Prepare it with "
            f"`sh data/get_tinyimagenet.sh` from the repository root (downloads the zip into data/ and sorts "
            f"train/ and val/ into one folder per class; set DATA_DIR=<folder> to put it elsewhere), "
            f"or point --data_folder at the folder that holds {FOLDER}/.")


def _images_in(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in SUFFIXES)


def _list_files(root: Path) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Return (classes, [(train file, label)], [(val file, label)]) for the sorted or the raw zip layout."""
    train_dir, val_dir = root / "train", root / "val"
    if not train_dir.is_dir() or not val_dir.is_dir():
        raise DatasetError(_missing_message(root.parent, f"{train_dir} or {val_dir} is missing"))
    classes = sorted(path.name for path in train_dir.iterdir() if path.is_dir())
    if not classes:
        raise DatasetError(_missing_message(root.parent, f"no class folders in {train_dir}"))
    class_index = {wnid: label for label, wnid in enumerate(classes)}
    train: list[tuple[Path, int]] = []
    for wnid in classes:
        folder = train_dir / wnid
        raw_folder = folder / "images"  # the zip's own layout: train/<wnid>/images/*.JPEG
        files = _images_in(folder) + (_images_in(raw_folder) if raw_folder.is_dir() else [])
        train += [(path, class_index[wnid]) for path in files]
    val: list[tuple[Path, int]] = []
    annotations = val_dir / "val_annotations.txt"
    if (val_dir / "images").is_dir() and annotations.is_file():  # unsorted zip layout
        for line in annotations.read_text().splitlines():
            fields = line.split("\t")
            if len(fields) < 2:
                continue
            if fields[1] not in class_index:
                raise DatasetError(_missing_message(root.parent, f"{annotations} names class {fields[1]} "
                                                                 f"that has no folder in {train_dir}"))
            val.append((val_dir / "images" / fields[0], class_index[fields[1]]))
        val.sort()
    for folder in sorted(path for path in val_dir.iterdir() if path.is_dir() and path.name != "images"):
        if folder.name not in class_index:
            raise DatasetError(_missing_message(root.parent, f"{folder} is not one of the classes in {train_dir}"))
        val += [(path, class_index[folder.name]) for path in _images_in(folder)]
    if not train or not val:
        raise DatasetError(_missing_message(root.parent, f"found {len(train)} train and {len(val)} val images"))
    return classes, train, val


def _fingerprint(root: Path, classes: list[str], files: list[tuple[Path, int]]) -> str:
    """Hash of relative paths, labels, sizes and mtimes: changes whenever the source files change."""
    digest = hashlib.sha256(f"v{CACHE_VERSION} {' '.join(classes)}\n".encode())
    for path, label in files:
        try:
            stat = path.stat()
        except OSError as error:
            raise DatasetError(_missing_message(root.parent, f"cannot read {path}: {error}")) from error
        digest.update(f"{path.relative_to(root).as_posix()}\t{label}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _decode(path: Path) -> np.ndarray:
    """One JPEG (grayscale or colour) -> uint8 (H, W, 3)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except Exception as error:  # PIL raises several types for damaged files
        raise DatasetError(f"Tiny ImageNet image {path} cannot be decoded ({type(error).__name__}: {error}). "
                           f"Replace the file, or delete the {FOLDER} folder and prepare it again with "
                           f"`sh data/get_tinyimagenet.sh`.") from error


def _decode_images(paths: list[Path], chunk: int = 4096) -> torch.Tensor:
    """Decode JPEGs in a thread pool (PIL releases the GIL) and resize them to uint8 (N, 3, 32, 32)."""
    out = torch.empty((len(paths), 3, 32, 32), dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for start in range(0, len(paths), chunk):
            arrays = list(pool.map(_decode, paths[start:start + chunk]))
            by_shape: dict[tuple[int, ...], list[int]] = {}
            for offset, array in enumerate(arrays):
                by_shape.setdefault(array.shape, []).append(offset)
            for offsets in by_shape.values():  # Tiny ImageNet is all 64x64; other sizes get their own batch
                batch = torch.from_numpy(np.stack([arrays[offset] for offset in offsets])).permute(0, 3, 1, 2)
                out[torch.tensor(offsets) + start] = resize_uint8(batch)
    return out


def _load_cache(path: Path, fingerprint: str) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        cache = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        warnings.warn(f"ignoring unreadable Tiny ImageNet cache {path} ({error}); rebuilding it")
        return None
    keys = {"fingerprint", "train_images", "train_labels", "test_images", "test_labels"}
    if not isinstance(cache, dict) or not keys <= cache.keys() or cache["fingerprint"] != fingerprint:
        return None
    return cache


def load_tinyimagenet(data_folder: str | Path, download: bool = True) -> ImageData:
    """Load Tiny ImageNet-200 train / val (100,000 / 10,000, 200 classes) at 32x32, using the cache.

    ``download`` is accepted for a uniform signature; the archive is fetched by data/get_tinyimagenet.sh.
    """
    root = Path(data_folder).expanduser() / FOLDER
    if not root.is_dir():
        raise DatasetError(_missing_message(root.parent, f"{root} does not exist"))
    classes, train, val = _list_files(root)
    fingerprint = _fingerprint(root, classes, train + val)
    cache_path = root / CACHE_NAME
    cache = _load_cache(cache_path, fingerprint)
    if cache is None:
        cache = {
            "fingerprint": fingerprint,
            "train_images": _decode_images([path for path, _ in train]),
            "train_labels": torch.tensor([label for _, label in train], dtype=torch.int64),
            "test_images": _decode_images([path for path, _ in val]),
            "test_labels": torch.tensor([label for _, label in val], dtype=torch.int64),
        }
        try:
            atomic_torch_save(cache, cache_path)
        except OSError as error:  # read-only data folder: work without a cache
            warnings.warn(f"could not write the Tiny ImageNet cache {cache_path} ({error}); "
                          f"the JPEGs will be decoded again next time")
    return ImageData("tinyimagenet", len(classes), MEAN, STD, cache["train_images"], cache["train_labels"],
                     cache["test_images"], cache["test_labels"])
