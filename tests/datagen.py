"""Write small datasets in the official on-disk formats (tests never download anything).

Images carry a learnable class signal (a class colour plus a class-specific stripe pattern, with
noise), so a small network beats chance after a couple of epochs.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def class_images(labels: np.ndarray, size: int, num_classes: int, seed: int = 0, noise: float = 20.0) -> np.ndarray:
    """uint8 (N, 3, size, size) images: per-class base colour + stripes (orientation, frequency) + noise."""
    palette = np.random.default_rng(1234 + num_classes).uniform(40, 215, size=(num_classes, 3))
    rng = np.random.default_rng(seed)
    grid = np.arange(size) / size
    rows, cols = np.meshgrid(grid, grid, indexing="ij")
    images = np.empty((len(labels), 3, size, size), dtype=np.uint8)
    for i, label in enumerate(labels):
        label = int(label)
        frequency = 1 + label % 5
        phase = {0: rows, 1: cols, 2: rows + cols, 3: rows - cols}[(label // 5) % 4]
        stripes = 40 * np.sign(np.sin(2 * np.pi * frequency * phase))
        image = palette[label][:, None, None] + stripes[None] + rng.normal(0, noise, size=(3, size, size))
        images[i] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return images


def _balanced_labels(count: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(count) % num_classes)


def write_cifar100_split(path: Path, images: np.ndarray, fine_labels: np.ndarray, bytes_keys: bool = False,
                         batch_label: str = "training batch 1 of 1") -> None:
    """Write one CIFAR-100 python pickle from uint8 (N, 3, 32, 32) images (stored as N x 3072, CHW row-major)."""
    entry = {
        "filenames": [f"generated_{i:05d}.png" for i in range(len(fine_labels))],
        "batch_label": batch_label,
        "fine_labels": [int(label) for label in fine_labels],
        "coarse_labels": [int(label) // 5 for label in fine_labels],
        "data": np.ascontiguousarray(images, dtype=np.uint8).reshape(len(fine_labels), -1),
    }
    if bytes_keys:
        entry = {key.encode(): value for key, value in entry.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(entry, handle, protocol=2)


def write_cifar100(folder: str | Path, n_train: int = 500, n_test: int = 200, seed: int = 0,
                   bytes_keys: bool = False) -> Path:
    """Write ``<folder>/cifar-100-python/{train,test,meta}``; returns ``<folder>``."""
    folder = Path(folder)
    root = folder / "cifar-100-python"
    rng = np.random.default_rng(seed)
    for split, count, label in (("train", n_train, "training batch 1 of 1"), ("test", n_test, "testing batch 1 of 1")):
        labels = _balanced_labels(count, 100, rng)
        images = class_images(labels, 32, 100, seed=int(rng.integers(2**31)))
        write_cifar100_split(root / split, images, labels, bytes_keys=bytes_keys, batch_label=label)
    meta = {"fine_label_names": [f"fine_{i}" for i in range(100)],
            "coarse_label_names": [f"coarse_{i}" for i in range(20)]}
    with open(root / "meta", "wb") as handle:
        pickle.dump(meta, handle, protocol=2)
    return folder


CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def write_cifar10(folder: str | Path, n_train: int = 500, n_test: int = 200, seed: int = 0) -> Path:
    """Write ``<folder>/cifar-10-batches-py/`` as the official archive holds it: data_batch_1..5 (the
    training images split in 5), test_batch and batches.meta, each a protocol-2 pickled dict with bytes
    keys (b'data' N x 3072 uint8 CHW row-major, b'labels' list of 0..9, b'batch_label', b'filenames');
    returns ``<folder>``."""
    folder = Path(folder)
    root = folder / "cifar-10-batches-py"
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    train_labels = _balanced_labels(n_train, 10, rng)
    splits = [(f"data_batch_{i + 1}", f"training batch {i + 1} of 5", part)
              for i, part in enumerate(np.array_split(train_labels, 5))]
    splits.append(("test_batch", "testing batch 1 of 1", _balanced_labels(n_test, 10, rng)))
    for name, batch_label, labels in splits:
        images = class_images(labels, 32, 10, seed=int(rng.integers(2**31)))
        entry = {b"batch_label": batch_label.encode(), b"labels": [int(label) for label in labels],
                 b"data": np.ascontiguousarray(images, dtype=np.uint8).reshape(len(labels), -1),
                 b"filenames": [f"generated_{name}_{i:05d}.png".encode() for i in range(len(labels))]}
        with open(root / name, "wb") as handle:
            pickle.dump(entry, handle, protocol=2)
    meta = {b"num_cases_per_batch": len(splits[0][2]), b"label_names": [name.encode() for name in CIFAR10_NAMES],
            b"num_vis": 3072}
    with open(root / "batches.meta", "wb") as handle:
        pickle.dump(meta, handle, protocol=2)
    return folder


def write_stl10_split(folder: str | Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write ``<folder>/stl10_binary/<split>_{X,y}.bin`` from upright uint8 (N, 3, 96, 96) images, labels 0..9.

    The official files store each channel column-major and labels as 1..10.
    """
    root = Path(folder) / "stl10_binary"
    root.mkdir(parents=True, exist_ok=True)
    np.ascontiguousarray(np.asarray(images, dtype=np.uint8).transpose(0, 1, 3, 2)).tofile(root / f"{split}_X.bin")
    (np.asarray(labels) + 1).astype(np.uint8).tofile(root / f"{split}_y.bin")


def write_stl10(folder: str | Path, n_train: int = 100, n_test: int = 50, seed: int = 0) -> Path:
    """Write the labelled STL-10 splits (96x96, 10 classes) and class_names.txt; returns ``<folder>``."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("test", n_test)):
        labels = _balanced_labels(count, 10, rng)
        write_stl10_split(folder, split, class_images(labels, 96, 10, seed=int(rng.integers(2**31))), labels)
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "stl10_binary" / "class_names.txt").write_text("\n".join(names) + "\n")
    return folder


def _save_jpeg(path: Path, image: np.ndarray, grayscale: bool = False) -> None:
    picture = Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)))
    if grayscale:  # the real dataset has some single-channel JPEGs
        picture = picture.convert("L")
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, quality=95)


def write_tinyimagenet(folder: str | Path, n_classes: int = 3, n_train_per_class: int = 4,
                       n_val_per_class: int = 2, seed: int = 0, layout: str = "raw") -> Path:
    """Write ``<folder>/tiny-imagenet-200`` with 64x64 JPEGs (the first train image of class 0 grayscale).

    layout 'raw' is the zip's: wnids.txt, words.txt, train/<wnid>/images/*.JPEG + <wnid>_boxes.txt,
    val/images/*.JPEG + val/val_annotations.txt, test/images/*.JPEG. layout 'sorted' is what
    data/get_tinyimagenet.sh produces: train/<wnid>/*.JPEG and val/<wnid>/*.JPEG. Returns the root.
    """
    if layout not in ("raw", "sorted"):
        raise ValueError(f"layout must be 'raw' or 'sorted', got {layout!r}")
    root = Path(folder) / "tiny-imagenet-200"
    rng = np.random.default_rng(seed)
    wnids = [f"n{1443537 + 1000 * i:08d}" for i in range(n_classes)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("".join(f"{wnid}\n" for wnid in wnids))
    (root / "words.txt").write_text("".join(f"{wnid}\tgenerated class {i}\n" for i, wnid in enumerate(wnids)))
    for label, wnid in enumerate(wnids):
        images = class_images(np.full(n_train_per_class, label), 64, n_classes, seed=int(rng.integers(2**31)))
        image_dir = root / "train" / wnid / ("images" if layout == "raw" else "")
        boxes = []
        for i, image in enumerate(images):
            name = f"{wnid}_{i}.JPEG"
            _save_jpeg(image_dir / name, image, grayscale=(label == 0 and i == 0))
            boxes.append(f"{name}\t0\t0\t63\t63\n")
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(boxes))
    val_labels = _balanced_labels(n_classes * n_val_per_class, n_classes, rng)
    val_images = class_images(val_labels, 64, n_classes, seed=int(rng.integers(2**31)))
    annotations = []
    for i, (label, image) in enumerate(zip(val_labels, val_images)):
        name = f"val_{i}.JPEG"
        wnid = wnids[int(label)]
        _save_jpeg(root / "val" / ("images" if layout == "raw" else wnid) / name, image)
        annotations.append(f"{name}\t{wnid}\t0\t0\t63\t63\n")
    if layout == "raw":
        (root / "val" / "val_annotations.txt").write_text("".join(annotations))
        for i, image in enumerate(class_images(rng.integers(0, n_classes, size=2), 64, n_classes, seed=seed)):
            _save_jpeg(root / "test" / "images" / f"test_{i}.JPEG", image)
    return root


def write_tinyimagenet_raw(folder: str | Path, n_classes: int = 3, n_train_per_class: int = 4,
                           n_val_per_class: int = 2, seed: int = 0) -> Path:
    """Write the raw zip layout of Tiny ImageNet-200 under ``<folder>``; returns ``<folder>/tiny-imagenet-200``."""
    return write_tinyimagenet(folder, n_classes, n_train_per_class, n_val_per_class, seed, layout="raw")


def zip_tree(source: str | Path, zip_path: str | Path) -> Path:
    """Zip the folder ``source`` with entries named ``<source name>/...`` (directories included), like the
    official tiny-imagenet-200.zip; returns ``zip_path``."""
    source, zip_path = Path(source), Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(source, source.name)
        for path in sorted(source.rglob("*")):
            archive.write(path, f"{source.name}/{path.relative_to(source).as_posix()}")
    return zip_path


def write_imagenet(folder: str | Path, n_classes: int = 2, n_train_per_class: int = 8, n_val_per_class: int = 4,
                   height: int = 72, width: int = 88, seed: int = 0) -> Path:
    """Write ``<folder>/imagenet/{train,val}/<wnid>/*.JPEG`` (non-square JPEGs; the first train image of
    class 0 greyscale and the second one a PNG named .JPEG, as in the real dataset); returns ``<folder>``."""
    root = Path(folder) / "imagenet"
    rng = np.random.default_rng(seed)
    wnids = [f"n{1440764 + 1000 * i:08d}" for i in range(n_classes)]
    size = max(height, width)
    for split, count in (("train", n_train_per_class), ("val", n_val_per_class)):
        for label, wnid in enumerate(wnids):
            images = class_images(np.full(count, label), size, n_classes, seed=int(rng.integers(2**31)))
            for i, image in enumerate(images[:, :, :height, :width]):
                path = root / split / wnid / f"{wnid}_{split}_{i}.JPEG"
                if split == "train" and label == 0 and i == 1:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0))).save(path, format="PNG")
                else:
                    _save_jpeg(path, image, grayscale=(split == "train" and label == 0 and i == 0))
    return Path(folder)
