"""The teacher bank: a frozen teacher's fp32 outputs for every (training image, augmented view).

CIFAR-style training views are a finite set: zero padding 4, a 32x32 crop at one of 9 x 9 corners
and an optional horizontal flip give ``VIEWS_PER_IMAGE`` = 162 views of each image. A teacher in
eval mode maps each to fixed outputs, so a run can look them up instead of running the teacher at
every step: the same training up to the float rounding of the teacher's forward at another batch
size. A bank holds the logits of every view, and the pooled embedding (the feature the classifier
reads) where a method needs it, as memory-mapped float32 arrays plus ``manifest.json`` (what it
was built from, chunk checksums). It is built once per (teacher weights, training split,
normalization), in chunks that survive an interrupt, under a lock so that parallel runs build it
once, and verified each time it is opened.
"""
from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from dataset.loaders import PADDING, VIEWS_PER_IMAGE, normalize, random_crop_flip, view_ids
from helper.errors import UserError

CORNERS = 2 * PADDING + 1
OUTPUTS = ("logits", "embedding")
MANIFEST = "manifest.json"
CHUNK_IMAGES = 256         # images per build chunk: the unit of progress an interrupted build keeps
# Views per teacher forward while building: on a 2-core CPU batch 64 ran 10% faster per image than 512
# (resnet32x4, folded, NHWC: 64.5 vs 58.7 img/s), and it is the batch a training step's teacher runs
# at, so a compiled teacher reuses its graph; a GPU wants large batches.
BUILD_BATCH = {"cpu": 64, "cuda": 1024}
FORMAT = 1
CHECK_ENTRIES = 4          # random (image, view) entries recomputed when a bank is opened
CHECK_TOLERANCE = 1e-3     # |bank - recomputed| <= tol * (1 + |recomputed|): batch-size round-off is ~1e-6
# --teacher_bank auto builds a missing bank for runs of at least this many epochs: building costs
# VIEWS_PER_IMAGE (162) teacher passes over the split, each cheaper than a training step's teacher
# forward (bench/RESULTS.md, "Teacher bank"), so a run this long repays it by itself. A bank that
# exists is used by any run (a sweep builds it first when its runs together repay it).
AUTO_BUILD_MIN_EPOCHS = 200


__all__ = ["VIEWS_PER_IMAGE", "BankSpec", "TeacherBank", "open_or_build", "view_ids", "view_params"]


def view_params(ids: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse of ``view_ids``: (offsets (B, 2) int64, flips (B,) bool)."""
    corner, flips = ids // 2, (ids % 2).bool()
    return torch.stack((corner // CORNERS, corner % CORNERS), dim=1), flips


@dataclass(frozen=True)
class BankSpec:
    """What a bank is the teacher outputs of; two banks with equal specs hold the same numbers."""

    teacher_digest: str      # helper.provenance.weights_digest of the teacher's weights
    teacher_arch: str
    dataset: str
    train_size: int
    data_digest: str         # sha256 of the training images' bytes (first 16 hex)
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    outputs: tuple[str, ...]  # ("logits",) or ("logits", "embedding")
    num_classes: int
    embedding_dim: int

    @property
    def folder_name(self) -> str:
        key = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.teacher_arch}_{self.teacher_digest}_{self.dataset}_{key}"

    def shape(self, output: str) -> tuple[int, int, int]:
        width = self.num_classes if output == "logits" else self.embedding_dim
        return self.train_size, VIEWS_PER_IMAGE, width

    def nbytes(self) -> int:
        return sum(int(np.prod(self.shape(output))) * 4 for output in self.outputs)


def bank_blocker(method: str, reads: str, views: tuple[str, ...], loader: str, dataset: str,
                 teacher_mode: str = "eval") -> str | None:
    """Why a run cannot read a teacher bank, or None when it can."""
    if teacher_mode != "eval":
        return (f"--distill {method} runs the teacher in {teacher_mode} mode (BatchNorm with each batch's "
                "statistics), so its outputs depend on the whole batch, not on the view alone")
    if reads not in OUTPUTS:
        return f"--distill {method} reads the teacher's intermediate feature maps, which a bank does not hold"
    if tuple(views) != ("weak",):
        return f"--distill {method} also trains on a strong (RandAugment) view, which has no finite set of views"
    if loader != "fast":
        return "--loader classic draws its crops in worker processes; the bank needs the fast loader's view numbers"
    if dataset == "imagenet":
        return "ImageNet's RandomResizedCrop has no finite set of views"
    return None


def decide(setting: str, blocker: str | None, epochs: int, built: bool) -> tuple[bool, str | None]:
    """--teacher_bank auto|on|off -> (use it, the line that says why when a user might expect it on).
    ``on`` where the bank cannot apply is refused with the reason."""
    if setting == "off":
        return False, None
    if blocker is not None:
        if setting == "on":
            raise UserError(f"--teacher_bank on cannot apply: {blocker}. Pass --teacher_bank auto or off.")
        return False, None
    if setting == "on" or built:
        return True, None
    if epochs >= AUTO_BUILD_MIN_EPOCHS:
        return True, None
    return False, (f"teacher bank: off (a {epochs}-epoch run does not repay building it, {VIEWS_PER_IMAGE} teacher "
                   f"passes over the data; auto builds it from {AUTO_BUILD_MIN_EPOCHS} epochs and uses an existing one "
                   "always; --teacher_bank on to build it now)")


def is_built(root: Path, spec: BankSpec) -> bool:
    """Whether the bank of ``spec`` exists complete under ``root`` (not verified here)."""
    try:
        manifest = read_manifest(root / spec.folder_name)
    except UserError:
        return False
    return bool(manifest and manifest.get("complete"))


def data_digest(images: Tensor) -> str:
    """Digest of a uint8 image split (N, C, H, W)."""
    return hashlib.sha256(images.contiguous().cpu().numpy().tobytes()).hexdigest()[:16]


def describe_size(nbytes: int) -> str:
    if nbytes >= 2**30:
        return f"{nbytes / 2**30:.1f} GiB"
    return f"{nbytes / 2**20:.0f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.0f} KiB"


class TeacherBank:
    """An opened, verified bank: ``lookup(samples, views)`` -> (logits, embedding or None)."""

    def __init__(self, folder: Path, spec: BankSpec | None, arrays: dict[str, Tensor]) -> None:
        self.folder, self.spec, self.arrays = folder, spec, arrays

    def to(self, device: torch.device) -> "TeacherBank":
        """Keep the bank in ``device`` memory when it fits in half the free memory, else in pinned host
        memory (CUDA); on the CPU it stays memory-mapped."""
        if device.type != "cuda":
            return self
        free, _ = torch.cuda.mem_get_info(device)
        if sum(array.numel() * array.element_size() for array in self.arrays.values()) <= free // 2:
            self.arrays = {name: array.to(device) for name, array in self.arrays.items()}
        else:
            self.arrays = {name: array.pin_memory() for name, array in self.arrays.items()}
        return self

    def lookup(self, samples: Tensor, views: Tensor) -> tuple[Tensor, Tensor | None]:
        """The teacher's logits (B, classes) and embedding (B, dim) or None, for samples/views (B,)."""
        target = samples.device
        found = []
        for name in OUTPUTS:
            array = self.arrays.get(name)
            if array is None:
                found.append(None)
                continue
            flat = (samples * VIEWS_PER_IMAGE + views).to(array.device)
            rows = array.view(-1, array.shape[-1]).index_select(0, flat)  # one gather of B rows
            found.append(rows.to(target, non_blocking=True))
        return found[0], found[1]


def teacher_outputs(teacher: nn.Module, batch: Tensor, outputs: tuple[str, ...],
                    batch_size: int | None = None) -> dict[str, Tensor]:
    """The frozen teacher's fp32 outputs for one normalised batch; a batch smaller than ``batch_size``
    is padded to it (repeating its first image) so that a compiled teacher keeps one static shape."""
    count = batch.shape[0]
    if batch_size is not None and count < batch_size:
        batch = torch.cat((batch, batch[:1].expand(batch_size - count, *batch.shape[1:])))
    if "embedding" in outputs:
        feats, logits = teacher(batch, is_feat=True)
        return {"logits": logits[:count].float(), "embedding": feats[-1][:count].float().flatten(1)}
    return {"logits": teacher(batch)[:count].float()}


def views_of(images: Tensor, ids: Tensor, mean: Tensor, std: Tensor, channels_last: bool) -> Tensor:
    """Normalised float32 views ``ids`` (B,) of uint8 ``images`` (B, C, H, W)."""
    offsets, flips = view_params(ids)
    batch = normalize(random_crop_flip(images, offsets, flips), mean, std)
    return batch.contiguous(memory_format=torch.channels_last) if channels_last else batch


@contextmanager
def bank_lock(folder: Path) -> Iterator[None]:
    """Exclusive lock of a bank folder (one builder; the others wait, then reuse its work)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"teacher bank: another process is building '{folder}'; waiting for it.", flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "started": time.time()}).encode())
        yield
    finally:
        os.close(fd)


def bank_is_locked(folder: Path) -> bool:
    """Whether a live process holds ``folder``'s lock (building or verifying it)."""
    path = folder / ".lock"
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise UserError(damaged(folder, f"its manifest '{path}' cannot be read")) from None


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    fd, temporary = tempfile.mkstemp(prefix=f".{MANIFEST}.", dir=folder)
    with os.fdopen(fd, "w") as handle:
        json.dump(manifest, handle, indent=1)
    os.replace(temporary, folder / MANIFEST)


def damaged(folder: Path, what: str) -> str:
    return (f"The teacher bank '{folder}' is damaged: {what}. Delete that folder and rerun (the bank is rebuilt "
            "from the teacher), or pass --teacher_bank off to train without it.")


def open_or_build(root: Path, spec: BankSpec, teacher: nn.Module, images: Tensor, device: torch.device,
                  channels_last: bool = False, batch_size: int | None = None, progress: bool = True) -> TeacherBank:
    """The bank of ``spec`` under ``root``: built (or finished, after an interrupt) if needed, under
    the folder's lock, then verified. ``teacher``: frozen, eval mode, on ``device``; ``images``: the
    uint8 training split (N, C, H, W)."""
    folder = root / spec.folder_name
    batch_size = batch_size or BUILD_BATCH.get(device.type, 64)
    with bank_lock(folder):
        manifest = read_manifest(folder)
        if manifest is not None and manifest.get("spec") != json.loads(json.dumps(asdict(spec))):
            raise UserError(damaged(folder, "its manifest describes another teacher, dataset or normalization"))
        if manifest is None or not manifest.get("complete"):
            manifest = build(folder, spec, manifest, teacher, images, device, channels_last, batch_size, progress)
        bank = open_bank(folder, spec, manifest)
        check_entries(bank, teacher, images, device, channels_last)
    return bank


def check_disk(folder: Path, spec: BankSpec) -> None:
    """Refuse to start a build that the disk cannot hold."""
    free = shutil.disk_usage(folder).free
    if free < spec.nbytes():
        raise UserError(f"The teacher bank needs {describe_size(spec.nbytes())} in '{folder}', but the disk has "
                        f"{describe_size(free)} free. Free some space, put --save_folder on a larger disk, or pass "
                        "--teacher_bank off to run the teacher at every step.")


def build(folder: Path, spec: BankSpec, manifest: dict[str, Any] | None, teacher: nn.Module, images: Tensor,
          device: torch.device, channels_last: bool, batch_size: int, progress: bool) -> dict[str, Any]:
    """Compute every (image, view) output chunk by chunk; the manifest records each finished chunk
    (with its checksum) so an interrupted build continues where it stopped."""
    if manifest is None:
        check_disk(folder, spec)
        chunk = max(1, min(CHUNK_IMAGES, spec.train_size))
        manifest = {"format": FORMAT, "spec": asdict(spec), "chunk_images": chunk, "checksums": {o: [] for o in
                    spec.outputs}, "complete": False, "started": _now(), "bytes": spec.nbytes()}
        for output in spec.outputs:
            np.lib.format.open_memmap(folder / f"{output}.npy", mode="w+", dtype=np.float32,
                                      shape=spec.shape(output)).flush()
        write_manifest(folder, manifest)
    chunk, done = manifest["chunk_images"], len(manifest["checksums"][spec.outputs[0]])
    total = -(-spec.train_size // chunk)
    print(f"teacher bank: building {describe_size(spec.nbytes())} of {spec.teacher_arch} outputs "
          f"({', '.join(spec.outputs)}) for {spec.train_size:,} images x {VIEWS_PER_IMAGE} views -> '{folder}'"
          + (f" (continuing at chunk {done + 1} of {total})" if done else ""), flush=True)
    arrays = {o: np.load(folder / f"{o}.npy", mmap_mode="r+") for o in spec.outputs}
    mean, std = (torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (spec.mean, spec.std))
    bar = tqdm(total=total, initial=done, desc="teacher bank", unit="chunk", disable=not progress, mininterval=2.0)
    for index in range(done, total):
        first, last = index * chunk, min((index + 1) * chunk, spec.train_size)
        values = chunk_outputs(teacher, images[first:last].to(device), spec.outputs, mean, std, channels_last,
                               batch_size)
        for output in spec.outputs:
            arrays[output][first:last] = values[output]
            arrays[output].flush()
            manifest["checksums"][output].append(zlib.crc32(np.ascontiguousarray(arrays[output][first:last])))
        write_manifest(folder, manifest)
        bar.update(1)
    bar.close()
    manifest.update(complete=True, finished=_now())
    write_manifest(folder, manifest)
    return manifest


def chunk_outputs(teacher: nn.Module, images: Tensor, outputs: tuple[str, ...], mean: Tensor, std: Tensor,
                  channels_last: bool, batch_size: int) -> dict[str, np.ndarray]:
    """Outputs for every view of ``images`` (n, C, H, W) uint8 on the teacher's device: (n, 162, width)."""
    count = images.shape[0]
    image_index = torch.arange(count, device=images.device).repeat_interleave(VIEWS_PER_IMAGE)
    ids = torch.arange(VIEWS_PER_IMAGE, device=images.device).repeat(count)
    pieces: dict[str, list[Tensor]] = {o: [] for o in outputs}
    with torch.inference_mode():
        for start in range(0, image_index.numel(), batch_size):
            window = slice(start, start + batch_size)
            batch = views_of(images[image_index[window]], ids[window], mean, std, channels_last)
            for name, value in teacher_outputs(teacher, batch, outputs, batch_size).items():
                pieces[name].append(value.cpu())
    return {o: torch.cat(pieces[o]).view(count, VIEWS_PER_IMAGE, -1).numpy() for o in outputs}


def open_bank(folder: Path, spec: BankSpec, manifest: dict[str, Any]) -> TeacherBank:
    """Map a complete bank and check its files against the manifest (shapes, chunk checksums)."""
    chunk, arrays = manifest["chunk_images"], {}
    for output in spec.outputs:
        path = folder / f"{output}.npy"
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise UserError(damaged(folder, f"'{path}' cannot be mapped ({error})")) from None
        if array.shape != spec.shape(output) or array.dtype != np.float32:
            raise UserError(damaged(folder, f"'{path}' holds {array.dtype} {array.shape}, expected float32 "
                                            f"{spec.shape(output)}"))
        for index, expected in enumerate(manifest["checksums"][output]):
            if zlib.crc32(np.ascontiguousarray(array[index * chunk:(index + 1) * chunk])) != expected:
                raise UserError(damaged(folder, f"'{path}' does not match its checksum (images {index * chunk} to "
                                                f"{min((index + 1) * chunk, spec.train_size) - 1})"))
        with warnings.catch_warnings():  # read-only map: the bank is never written through it
            warnings.simplefilter("ignore", UserWarning)
            arrays[output] = torch.from_numpy(array)
    return TeacherBank(folder, spec, arrays)


def check_entries(bank: TeacherBank, teacher: nn.Module, images: Tensor, device: torch.device,
                  channels_last: bool) -> None:
    """Recompute a few random entries with the teacher: a bank of other weights or data never passes."""
    generator = torch.Generator().manual_seed(int(time.time_ns() % 2**31))
    samples = torch.randint(0, bank.spec.train_size, (CHECK_ENTRIES,), generator=generator)
    views = torch.randint(0, VIEWS_PER_IMAGE, (CHECK_ENTRIES,), generator=generator)
    mean, std = (torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (bank.spec.mean, bank.spec.std))
    with torch.inference_mode():
        batch = views_of(images[samples].to(device), views.to(device), mean, std, channels_last)
        fresh = teacher_outputs(teacher, batch, bank.spec.outputs, BUILD_BATCH.get(device.type, 64))
    stored = dict(zip(OUTPUTS, bank.lookup(samples, views)))
    for name in bank.spec.outputs:
        expected, found = fresh[name].cpu().double(), stored[name].cpu().double()
        if not torch.all((found - expected).abs() <= CHECK_TOLERANCE * (1 + expected.abs())):
            raise UserError(damaged(bank.folder, f"its {name} differ from the teacher's own outputs (largest "
                                                 f"difference {(found - expected).abs().max():.3g})"))


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
