"""A dataset's content digest: what a run records of its data, so that resuming, skipping and
summarizing compare the images and labels themselves, not only how many there are.

Per split (train, test): sha256 of the uint8 images and the int64 labels as the loader returns
them (first 16 hex digits). A run computes it once, when it loads the data, and caches it beside
the dataset's folder in ``<data_folder>/<dataset folder>.digest.json``, keyed by the names, sizes
and modification times of the files in that folder: ``--print_run_dir`` then reads it without
loading anything, and a changed file is digested anew by the next run. ImageNet's JPEG folders are
not decoded for it: its digest is of the file list (relative path, label and size of every file),
cached by the modification times of its split and class folders (which change when files are
added, removed or renamed, not when one is rewritten in place). The built-in ``digits`` are
digested directly.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from dataset import cifar10, cifar100, stl10, tinyimagenet
from helper.util import atomic_write

DIGEST_LENGTH = 16
CACHE_SUFFIX = ".digest.json"
CACHE_FORMAT = 1
SPLITS = ("train", "test")
# The folder under --data_folder that holds each dataset's files (a dataset not listed, other than the
# built-in digits, is digested each time it is loaded and never known beforehand).
FOLDERS = {"cifar100": cifar100.FOLDER, "cifar10": cifar10.FOLDER, "stl10": stl10.FOLDER,
           "tinyimagenet": tinyimagenet.FOLDER, "imagenet": "imagenet"}
BUILT_IN = ("digits",)
IGNORED_FILES = frozenset({tinyimagenet.CACHE_NAME})  # this repository's own caches inside a dataset folder


def split_digest(images: torch.Tensor, labels: torch.Tensor) -> str:
    """sha256 of a split's uint8 images (N, C, H, W) and int64 labels (N,), first 16 hex digits."""
    digest = hashlib.sha256(f"{tuple(images.shape)}|{images.dtype}|{labels.dtype}|".encode())
    digest.update(images.detach().cpu().contiguous().numpy())
    digest.update(labels.detach().cpu().contiguous().numpy())
    return digest.hexdigest()[:DIGEST_LENGTH]


def file_list_digest(root: Path, files: list[str], labels: torch.Tensor) -> str:
    """sha256 of (path relative to ``root``, label, size in bytes) for every file, first 16 hex digits."""
    digest = hashlib.sha256()
    for path, label in zip(files, labels.tolist()):
        digest.update(f"{Path(path).relative_to(root).as_posix()}\t{label}\t{os.stat(path).st_size}\n".encode())
    return digest.hexdigest()[:DIGEST_LENGTH]


def data_content(data: Any, dataset: str, data_folder: str | Path) -> dict[str, str]:
    """{'train': digest, 'test': digest} of loaded data: an ImageData's tensors, or for ImageNet (a
    FolderData, streamed from its files) the file lists."""
    if hasattr(data, "train_images"):
        return {split: split_digest(getattr(data, f"{split}_images"), getattr(data, f"{split}_labels"))
                for split in SPLITS}
    root = Path(data_folder) / FOLDERS[dataset]
    return {split: file_list_digest(root, getattr(data, f"{split}_files"), getattr(data, f"{split}_labels"))
            for split in SPLITS}


def _stamp(dataset: str, data_folder: str | Path) -> str | None:
    """A hash of what the cached digest depends on: the names, sizes and modification times of the
    files in the dataset's folder (ImageNet: the modification times of its split and class folders);
    None when the folder is missing."""
    root = Path(data_folder).expanduser() / FOLDERS[dataset]
    if not root.is_dir():
        return None
    lines = []
    try:
        if dataset == "imagenet":
            for split in ("train", "val"):
                lines.append(f"{split}\t{(root / split).stat().st_mtime_ns}")
                lines += sorted(f"{split}/{entry.name}\t{entry.stat().st_mtime_ns}"
                                for entry in os.scandir(root / split) if entry.is_dir())
        else:
            for folder, subfolders, names in os.walk(root, followlinks=True):
                subfolders.sort()
                for name in sorted(set(names) - IGNORED_FILES):
                    stat = os.stat(os.path.join(folder, name))
                    lines.append(f"{Path(folder, name).relative_to(root).as_posix()}\t{stat.st_size}\t"
                                 f"{stat.st_mtime_ns}")
    except OSError:
        return None
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def cache_path(dataset: str, data_folder: str | Path) -> Path:
    return Path(data_folder).expanduser() / f"{FOLDERS[dataset]}{CACHE_SUFFIX}"


def _read_cache(dataset: str, data_folder: str | Path, stamp: str | None) -> dict[str, str] | None:
    """The cached digest when it was computed from the files as they are now, else None."""
    if stamp is None:
        return None
    try:
        cached = json.loads(cache_path(dataset, data_folder).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(cached, dict) or cached.get("format") != CACHE_FORMAT or cached.get("stamp") != stamp:
        return None
    digest = cached.get("digest")
    return digest if isinstance(digest, dict) and all(isinstance(digest.get(s), str) for s in SPLITS) else None


def _write_cache(dataset: str, data_folder: str | Path, stamp: str, digest: dict[str, str]) -> None:
    """Write the cache atomically; a read-only data folder goes without (the next run digests again)."""
    text = json.dumps({"format": CACHE_FORMAT, "dataset": dataset, "stamp": stamp, "digest": digest}, indent=1,
                      sort_keys=True) + "\n"
    try:
        atomic_write(cache_path(dataset, data_folder), lambda handle: handle.write(text.encode()))
    except OSError:
        pass


def known_content(dataset: str, data_folder: str | Path) -> dict[str, str] | None:
    """The dataset's digest without loading it: the built-in digits' directly, another's from its cache
    when the files have not changed since; None when not known yet (no run has loaded them since)."""
    if dataset in BUILT_IN:
        return dict(_built_in_content(dataset))
    if dataset not in FOLDERS:
        return None
    return _read_cache(dataset, data_folder, _stamp(dataset, data_folder))


@functools.lru_cache(maxsize=None)
def _built_in_content(dataset: str) -> tuple[tuple[str, str], ...]:
    """A built-in dataset's digest, computed once per process (a sweep plans many runs of it)."""
    from dataset import load_dataset

    return tuple(data_content(load_dataset(dataset, None), dataset, "").items())


def content_of_loaded(data: Any, dataset: str, data_folder: str | Path, write: bool = True) -> dict[str, str]:
    """The digest of ``data`` just loaded from ``data_folder``: from the cache when the files are
    unchanged, else computed (and cached when ``write``)."""
    if dataset not in FOLDERS:
        return data_content(data, dataset, data_folder)
    stamp = _stamp(dataset, data_folder)
    cached = _read_cache(dataset, data_folder, stamp)
    if cached is not None:
        return cached
    digest = data_content(data, dataset, data_folder)
    if write and stamp is not None:
        _write_cache(dataset, data_folder, stamp, digest)
    return digest
