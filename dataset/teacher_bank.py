"""The teacher bank: a frozen teacher's outputs for every (training image, augmented view).

CIFAR-style training views are a finite set: zero padding 4, a 32x32 crop at one of 9 x 9 corners
and an optional horizontal flip give ``VIEWS_PER_IMAGE`` = 162 views of each image. A teacher in
eval mode maps each to fixed outputs, so a run can look them up instead of running the teacher at
every step: the same training up to the float rounding of the teacher's forward at another batch
size. A bank is one folder per (teacher weights, training split, views, normalization, --amp
autocast); each output it holds sits apart in it: ``logits.npy``, read by every method a bank
serves, and ``embedding.npy`` (the pooled feature the classifier reads), built when a method that
reads it first asks. Each is a float32 array with its manifest (``<output>.json``: what it was
built from, the dtype the teacher computed it in, chunk checksums), built in chunks that survive
an interrupt (or a full disk), under a lock (helper/runlock.py) so that parallel runs build it
once, and verified each time it is opened.
"""
from __future__ import annotations

import datetime
import errno
import hashlib
import json
import math
import os
import shutil
import signal
import time
import warnings
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from dataset.loaders import PADDING, VIEWS_PER_IMAGE, normalize, random_crop_flip, view_ids
from helper.errors import UserError
from helper.loop import autocast_factory
from helper.runlock import RunLock, describe_holder, holder
from helper.util import atomic_write

CORNERS = 2 * PADDING + 1
VIEW_SET = f"zero padding {PADDING}, {CORNERS}x{CORNERS} crop corners, horizontal flip or not"
OUTPUTS = ("logits", "embedding")  # in this order everywhere (one lock order: no deadlock)
CHUNK_IMAGES = 256         # images per build chunk: the unit of progress an interrupted build keeps
# Views per teacher forward while building: on a 2-core CPU batch 64 ran 10% faster per image than 512
# (resnet32x4, folded, NHWC: 64.5 vs 58.7 img/s), and it is the batch a training step's teacher runs
# at, so a compiled teacher reuses its graph; a GPU wants large batches.
BUILD_BATCH = {"cpu": 64, "cuda": 1024}
FORMAT = 2
CHECK_ENTRIES = 4          # random (image, view) entries recomputed when a bank is opened
CHECK_TOLERANCE = 1e-3     # |bank - recomputed| <= tol * (1 + |recomputed|): batch-size round-off is ~1e-6
CHECK_ULPS = 8             # under --amp: at least this many units of the output dtype's rounding
DISK_MARGIN = 2**20        # free bytes kept beyond a chunk's (for its manifest)
OUTPUT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# --teacher_bank auto builds a missing bank for runs of at least this many epochs: building costs
# VIEWS_PER_IMAGE (162) teacher passes over the split, each cheaper than a training step's teacher
# forward (bench/RESULTS.md, "Teacher bank"), so a run this long repays it by itself. A bank that
# exists is used by any run (a sweep builds it first when its runs together repay it).
AUTO_BUILD_MIN_EPOCHS = 200


__all__ = ["VIEWS_PER_IMAGE", "BankSpec", "BuildStopped", "TeacherBank", "open_or_build", "view_ids", "view_params"]


class BuildStopped(Exception):
    """SIGINT or SIGTERM while a bank was built, awaited or verified: the finished chunks are kept."""

    def __init__(self, signal_name: str, message: str = "") -> None:
        super().__init__(message or f"stopped by {signal_name}")
        self.signal_name = signal_name

    @property
    def exit_status(self) -> int:
        return 143 if self.signal_name == "SIGTERM" else 130


def view_params(ids: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse of ``view_ids``: (offsets (B, 2) int64, flips (B,) bool)."""
    corner, flips = ids // 2, (ids % 2).bool()
    return torch.stack((corner // CORNERS, corner % CORNERS), dim=1), flips


@dataclass(frozen=True)
class BankSpec:
    """What a bank folder holds the teacher outputs of; two banks with equal specs hold the same numbers."""

    teacher_digest: str      # helper.provenance.weights_digest of the teacher's weights
    teacher_arch: str
    dataset: str
    train_size: int
    data_digest: str         # sha256 of the training images' bytes (first 16 hex)
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    embedding_dim: int
    amp: str = "none"        # the autocast the teacher runs under (--amp): the bank holds what it computes
    views: str = VIEW_SET

    @property
    def folder_name(self) -> str:
        key = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.teacher_arch}_{self.teacher_digest}_{self.dataset}_{key}"

    def shape(self, output: str) -> tuple[int, int, int]:
        width = self.num_classes if output == "logits" else self.embedding_dim
        return self.train_size, VIEWS_PER_IMAGE, width

    def nbytes(self, outputs: tuple[str, ...] = OUTPUTS, images: int | None = None) -> int:
        """Bytes of ``outputs`` for ``images`` images (all of them by default)."""
        count = self.train_size if images is None else images
        return sum(count * VIEWS_PER_IMAGE * self.shape(output)[2] * 4 for output in outputs)


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


def check_request(setting: str, build_only: bool, blocker: str | None) -> None:
    """Refuse, from the flags alone, ``--teacher_bank on`` or ``--build_teacher_bank`` for a run that
    no bank can serve (``blocker``: why, from ``bank_blocker``)."""
    if blocker is None:
        return
    if build_only:
        raise UserError(f"--build_teacher_bank: this run reads no teacher bank: {blocker}.")
    if setting == "on":
        raise UserError(f"--teacher_bank on cannot apply: {blocker}. Pass --teacher_bank auto or off.")


def decide(setting: str, blocker: str | None, epochs: int, built: bool) -> tuple[bool, str | None]:
    """--teacher_bank auto|on|off -> (use it, the line that says why when a user might expect it on).
    ``on`` where the bank cannot apply is refused with the reason."""
    if setting == "off":
        return False, None
    if blocker is not None:
        check_request(setting, False, blocker)
        return False, None
    if setting == "on" or built:
        return True, None
    if epochs >= AUTO_BUILD_MIN_EPOCHS:
        return True, None
    return False, (f"teacher bank: off (a {epochs}-epoch run does not repay building it, {VIEWS_PER_IMAGE} teacher "
                   f"passes over the data; auto builds it from {AUTO_BUILD_MIN_EPOCHS} epochs and uses an existing one "
                   "always; --teacher_bank on to build it now)")


def is_built(root: Path, spec: BankSpec, outputs: tuple[str, ...]) -> bool:
    """Whether ``outputs`` of the bank of ``spec`` exist complete under ``root`` (not verified here)."""
    try:
        manifests = [read_manifest(root / spec.folder_name, output, spec) for output in outputs]
    except UserError:
        return False
    return all(manifest and manifest.get("complete") for manifest in manifests)


def data_digest(images: Tensor) -> str:
    """Digest of a uint8 image split (N, C, H, W)."""
    return hashlib.sha256(images.contiguous().cpu().numpy().tobytes()).hexdigest()[:16]


def describe_size(nbytes: int) -> str:
    if nbytes >= 2**30:
        return f"{nbytes / 2**30:.1f} GiB"
    return f"{nbytes / 2**20:.0f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.0f} KiB"


class TeacherBank:
    """An opened, verified bank: ``lookup(samples, views)`` -> (logits, embedding or None), each in
    the dtype the teacher computed it in (``dtypes``; float32 without --amp)."""

    def __init__(self, folder: Path, spec: BankSpec | None, arrays: dict[str, Tensor],
                 dtypes: dict[str, torch.dtype] | None = None) -> None:
        self.folder, self.spec, self.arrays, self.dtypes = folder, spec, arrays, dtypes or {}

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
            found.append(rows.to(target, dtype=self.dtypes.get(name, torch.float32), non_blocking=True))
        return found[0], found[1]


def teacher_outputs(teacher: nn.Module, batch: Tensor, outputs: tuple[str, ...],
                    batch_size: int | None = None) -> dict[str, Tensor]:
    """The frozen teacher's outputs for one normalised batch, in the dtype it computes them in (fp32,
    or the autocast dtype under --amp); a batch smaller than ``batch_size`` is padded to it
    (repeating its first image) so that a compiled teacher keeps one static shape."""
    count = batch.shape[0]
    if batch_size is not None and count < batch_size:
        batch = torch.cat((batch, batch[:1].expand(batch_size - count, *batch.shape[1:])))
    if "embedding" in outputs:
        feats, logits = teacher(batch, is_feat=True)
        return {"logits": logits[:count], "embedding": feats[-1][:count].flatten(1)}
    return {"logits": teacher(batch)[:count]}


def views_of(images: Tensor, ids: Tensor, mean: Tensor, std: Tensor, channels_last: bool) -> Tensor:
    """Normalised float32 views ``ids`` (B,) of uint8 ``images`` (B, C, H, W)."""
    offsets, flips = view_params(ids)
    batch = normalize(random_crop_flip(images, offsets, flips), mean, std)
    return batch.contiguous(memory_format=torch.channels_last) if channels_last else batch


def amp_context(device: torch.device, amp: str) -> Any:
    """The autocast a training step of ``--amp amp`` runs the teacher under (helper.loop's)."""
    factory = autocast_factory(device, amp)
    return factory() if factory is not None else nullcontext()


def damaged(folder: Path, what: str) -> str:
    return (f"The teacher bank '{folder}' is damaged: {what}. Delete that folder and rerun (the bank is rebuilt "
            "from the teacher), or pass --teacher_bank off to train without it.")


def read_manifest(folder: Path, output: str, spec: BankSpec | None = None) -> dict[str, Any] | None:
    """The manifest of ``output`` in ``folder`` (None: not started); damaged when unreadable, malformed
    or describing another bank than ``spec``."""
    path = folder / f"{output}.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        raise UserError(damaged(folder, f"its manifest '{path}' cannot be read")) from None
    valid = (isinstance(manifest, dict) and manifest.get("format") == FORMAT
             and isinstance(manifest.get("checksums"), list)
             and isinstance(manifest.get("chunk_images"), int) and manifest["chunk_images"] > 0)
    if not valid:
        raise UserError(damaged(folder, f"its manifest '{path}' is not one of bank format {FORMAT} (with the chunk "
                                        "size and checksums)"))
    if spec is not None and manifest.get("spec") != json.loads(json.dumps(asdict(spec))):
        raise UserError(damaged(folder, "its manifest describes another teacher, dataset or normalization"))
    return manifest


def write_manifest(folder: Path, output: str, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=1)
    atomic_write(folder / f"{output}.json", lambda handle: handle.write(text.encode()), durable=True)


def lock_output(folder: Path, output: str) -> RunLock:
    """Hold the build lock of one output (waiting, with a line that says so, while another process has it)."""
    name = f"{output}.lock"
    try:
        lock = RunLock.try_acquire(folder, 0.0, name)
        if lock is None:
            print(f"teacher bank: {describe_holder(holder(folder, name) or {})} is building the {output} of "
                  f"'{folder}'; waiting for it.", flush=True)
            lock = RunLock.try_acquire(folder, math.inf, name)
    except OSError as error:
        raise UserError(f"Cannot write to or lock the teacher bank folder '{folder}' ({error.strerror}). Pass a "
                        "writable --save_folder on a file system with file locks (flock), or --teacher_bank off."
                        ) from None
    lock.write_info(output=output)
    return lock


def claim_missing(folder: Path, spec: BankSpec, outputs: tuple[str, ...], locks: ExitStack
                  ) -> dict[str, dict[str, Any] | None]:
    """Lock each of ``outputs`` that is not complete (after any process building it finishes) and
    return those still missing once locked, with their manifests (None: not started)."""
    missing: dict[str, dict[str, Any] | None] = {}
    for output in (name for name in OUTPUTS if name in outputs):
        manifest = read_manifest(folder, output, spec)
        if manifest is not None and manifest.get("complete"):
            continue
        lock = lock_output(folder, output)
        manifest = read_manifest(folder, output, spec)  # what the process we waited for left
        if manifest is not None and manifest.get("complete"):
            lock.release()
            continue
        locks.callback(lock.release)
        missing[output] = manifest
    return missing


@contextmanager
def signals_stop_build() -> Iterator[None]:
    """SIGINT and SIGTERM raise BuildStopped while the block runs (in the main thread)."""
    def stop(signum: int, frame: Any) -> None:
        raise BuildStopped(signal.Signals(signum).name)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, stop)
        except ValueError:  # not the main thread: Ctrl-C stays a KeyboardInterrupt
            pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def open_or_build(root: Path, spec: BankSpec, outputs: tuple[str, ...], teacher: nn.Module, images: Tensor,
                  device: torch.device, channels_last: bool = False, batch_size: int | None = None,
                  progress: bool = True) -> TeacherBank:
    """The ``outputs`` of the bank of ``spec`` under ``root``: the missing ones built (or finished,
    after an interrupt) under their locks, then all verified. ``teacher``: frozen, eval mode, on
    ``device``; ``images``: the uint8 training split (N, C, H, W). Raises BuildStopped on SIGINT or
    SIGTERM (the finished chunks are kept), UserError for a full disk or a damaged bank."""
    folder = root / spec.folder_name
    batch_size = batch_size or BUILD_BATCH.get(device.type, 64)
    with signals_stop_build():
        try:
            with ExitStack() as locks:
                missing = claim_missing(folder, spec, outputs, locks)
                if missing:
                    build(folder, spec, missing, teacher, images, device, channels_last, batch_size, progress)
            bank = open_bank(folder, spec, outputs)
            check_entries(bank, teacher, images, device, channels_last)
        except (BuildStopped, KeyboardInterrupt) as stop:
            name = stop.signal_name if isinstance(stop, BuildStopped) else "SIGINT"
            raise BuildStopped(name, stopped_message(folder, spec, outputs, name)) from None
    return bank


def stopped_message(folder: Path, spec: BankSpec, outputs: tuple[str, ...], signal_name: str) -> str:
    """One line: what a stop leaves of the bank (finished chunks kept, continued next time)."""
    parts = []
    for output in outputs:
        try:
            manifest = read_manifest(folder, output, spec)
        except UserError:
            manifest = None
        if manifest is not None and not manifest.get("complete"):
            total = -(-spec.train_size // manifest["chunk_images"])
            parts.append(f"{output}: {len(manifest['checksums'])} of {total} chunks")
    if not parts:
        return f"teacher bank: stopped by {signal_name}; nothing of '{folder}' was left unfinished."
    return (f"teacher bank: stopped by {signal_name}; the finished chunks in '{folder}' are kept ({', '.join(parts)}) "
            "and the next run that reads the bank continues the build where it stopped.")


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def disk_full(folder: Path, free: int, needed: int, done: int, total: int) -> str:
    return (f"The disk holding the teacher bank '{folder}' has {describe_size(free)} free, and the next chunk needs "
            f"{describe_size(needed)}: the build stopped after {done} of {total} chunks, which are kept. Free some "
            "space and rerun (the build continues where it stopped), or pass --teacher_bank off to run the teacher "
            "at every step.")


def check_room(folder: Path, spec: BankSpec, missing: dict[str, dict[str, Any] | None]) -> None:
    """Refuse to start or continue a build whose remaining chunks the disk cannot hold."""
    remaining = 0
    for output, manifest in missing.items():
        done_images = len(manifest["checksums"]) * manifest["chunk_images"] if manifest else 0
        remaining += spec.nbytes((output,), max(spec.train_size - done_images, 0))
    free = free_bytes(folder)
    if free < remaining + DISK_MARGIN:
        raise UserError(f"The teacher bank needs {describe_size(remaining)} more in '{folder}', but the disk has "
                        f"{describe_size(free)} free. Free some space, put --save_folder on a larger disk, or pass "
                        "--teacher_bank off to run the teacher at every step.")


def new_output(folder: Path, spec: BankSpec, output: str, chunk: int) -> dict[str, Any]:
    """Create ``<output>.npy`` (a .npy header and a sparse body: disk blocks are taken as chunks are
    written) and its manifest."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
              "shape": spec.shape(output)}
    with open(folder / f"{output}.npy", "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.truncate(handle.tell() + spec.nbytes((output,)))
    manifest = {"format": FORMAT, "output": output, "spec": asdict(spec), "shape": list(spec.shape(output)),
                "dtype": None, "chunk_images": chunk, "checksums": [], "complete": False, "started": _now(),
                "bytes": spec.nbytes((output,))}
    write_manifest(folder, output, manifest)
    return manifest


def build(folder: Path, spec: BankSpec, missing: dict[str, dict[str, Any] | None], teacher: nn.Module,
          images: Tensor, device: torch.device, channels_last: bool, batch_size: int, progress: bool) -> None:
    """Build (or continue) the ``missing`` outputs, in one pass over the split when they share a chunk size."""
    check_room(folder, spec, missing)
    chunk = max(1, min(CHUNK_IMAGES, spec.train_size))
    manifests = {output: manifest or new_output(folder, spec, output, chunk) for output, manifest in missing.items()}
    same_chunks = len({manifest["chunk_images"] for manifest in manifests.values()}) == 1
    for group in ([list(manifests)] if same_chunks else [[output] for output in manifests]):
        build_pass(folder, spec, {output: manifests[output] for output in group}, teacher, images, device,
                   channels_last, batch_size, progress)


def build_pass(folder: Path, spec: BankSpec, manifests: dict[str, dict[str, Any]], teacher: nn.Module,
               images: Tensor, device: torch.device, channels_last: bool, batch_size: int, progress: bool) -> None:
    """Compute every (image, view) output chunk by chunk; a chunk's rows are synced to disk before its
    manifest records it (with its checksum), so an interrupted build continues where it stopped.
    Free space is checked before each chunk."""
    chunk = next(iter(manifests.values()))["chunk_images"]
    total = -(-spec.train_size // chunk)
    done = {output: len(manifest["checksums"]) for output, manifest in manifests.items()}
    offsets = {output: int(map_output(folder, spec, output).offset) for output in manifests}
    start = min(done.values())
    print(f"teacher bank: building {describe_size(spec.nbytes(tuple(manifests)))} of {spec.teacher_arch} outputs "
          f"({', '.join(manifests)}) for {spec.train_size:,} images x {VIEWS_PER_IMAGE} views -> '{folder}'"
          + (f" (continuing at chunk {start + 1} of {total})" if start else ""), flush=True)
    mean, std = (torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (spec.mean, spec.std))
    bar = tqdm(total=total, initial=start, desc="teacher bank", unit="chunk", disable=not progress, mininterval=2.0)
    for index in range(start, total):
        needed = tuple(output for output in manifests if done[output] <= index)
        first, last = index * chunk, min((index + 1) * chunk, spec.train_size)
        free, chunk_bytes = free_bytes(folder), spec.nbytes(needed, last - first)
        if free < chunk_bytes + DISK_MARGIN:
            raise UserError(disk_full(folder, free, chunk_bytes, index, total))
        values, dtypes = chunk_outputs(teacher, images[first:last].to(device), needed, mean, std, channels_last,
                                       batch_size, spec.amp)
        for output in needed:
            try:
                write_rows(folder / f"{output}.npy", offsets[output], values[output], first)
                manifests[output]["checksums"].append(zlib.crc32(values[output]))
                manifests[output]["dtype"] = dtypes[output]
                write_manifest(folder, output, manifests[output])
            except OSError as error:
                if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                raise UserError(disk_full(folder, free_bytes(folder), chunk_bytes, index, total)) from None
        bar.update(1)
    bar.close()
    for output, manifest in manifests.items():
        manifest.update(complete=True, finished=_now())
        write_manifest(folder, output, manifest)


def write_rows(path: Path, offset: int, values: np.ndarray, first: int) -> None:
    """Write ``values`` (n, views, width) as rows ``first``.. of the .npy file whose data starts at
    ``offset``, synced to disk. A plain write, not a memory-mapped one: a full disk then raises
    OSError here instead of killing the process with SIGBUS."""
    with open(path, "r+b") as handle:
        handle.seek(offset + first * values[0].nbytes)
        handle.write(values.data)
        handle.flush()
        os.fsync(handle.fileno())


def chunk_outputs(teacher: nn.Module, images: Tensor, outputs: tuple[str, ...], mean: Tensor, std: Tensor,
                  channels_last: bool, batch_size: int, amp: str = "none"
                  ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Outputs for every view of ``images`` (n, C, H, W) uint8 on the teacher's device, under the
    --amp autocast: (float32 arrays (n, 162, width), the dtype the teacher computed each in)."""
    count = images.shape[0]
    image_index = torch.arange(count, device=images.device).repeat_interleave(VIEWS_PER_IMAGE)
    ids = torch.arange(VIEWS_PER_IMAGE, device=images.device).repeat(count)
    pieces: dict[str, list[Tensor]] = {o: [] for o in outputs}
    dtypes: dict[str, str] = {}
    with torch.inference_mode(), amp_context(images.device, amp):
        for start in range(0, image_index.numel(), batch_size):
            window = slice(start, start + batch_size)
            batch = views_of(images[image_index[window]], ids[window], mean, std, channels_last)
            values = teacher_outputs(teacher, batch, outputs, batch_size)
            for name in outputs:
                dtypes[name] = str(values[name].dtype).removeprefix("torch.")
                pieces[name].append(values[name].float().cpu())
    arrays = {o: np.ascontiguousarray(torch.cat(pieces[o]).view(count, VIEWS_PER_IMAGE, -1).numpy()) for o in outputs}
    return arrays, dtypes


def map_output(folder: Path, spec: BankSpec, output: str) -> np.memmap:
    """``<output>.npy`` mapped read-only, checked to be float32 of the spec's shape; damaged otherwise
    (missing, empty, short or not a .npy file)."""
    path = folder / f"{output}.npy"
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as error:
        raise UserError(damaged(folder, f"'{path}' cannot be mapped ({type(error).__name__}: "
                                        f"{error or 'empty or short file'})")) from None
    if array.shape != spec.shape(output) or array.dtype != np.float32:
        raise UserError(damaged(folder, f"'{path}' holds {array.dtype} {array.shape}, expected float32 "
                                        f"{spec.shape(output)}"))
    return array


def open_bank(folder: Path, spec: BankSpec, outputs: tuple[str, ...]) -> TeacherBank:
    """Map complete outputs and check their files against their manifests (shapes, chunk checksums)."""
    arrays, dtypes = {}, {}
    for output in outputs:
        manifest = read_manifest(folder, output, spec)
        if manifest is None or not manifest.get("complete") or manifest.get("dtype") not in OUTPUT_DTYPES:
            raise UserError(damaged(folder, f"its {output} manifest does not record a complete build"))
        array, chunk, path = map_output(folder, spec, output), manifest["chunk_images"], folder / f"{output}.npy"
        if len(manifest["checksums"]) != -(-spec.train_size // chunk):
            raise UserError(damaged(folder, f"its {output} manifest lists {len(manifest['checksums'])} chunks"))
        for index, expected in enumerate(manifest["checksums"]):
            if zlib.crc32(np.ascontiguousarray(array[index * chunk:(index + 1) * chunk])) != expected:
                raise UserError(damaged(folder, f"'{path}' does not match its checksum (images {index * chunk} to "
                                                f"{min((index + 1) * chunk, spec.train_size) - 1})"))
        with warnings.catch_warnings():  # read-only map: the bank is never written through it
            warnings.simplefilter("ignore", UserWarning)
            arrays[output] = torch.from_numpy(array)
        dtypes[output] = OUTPUT_DTYPES[manifest["dtype"]]
    return TeacherBank(folder, spec, arrays, dtypes)


def check_entries(bank: TeacherBank, teacher: nn.Module, images: Tensor, device: torch.device,
                  channels_last: bool) -> None:
    """Recompute a few random entries with the teacher: a bank of other weights or data never passes."""
    spec = bank.spec
    generator = torch.Generator().manual_seed(int(time.time_ns() % 2**31))
    samples = torch.randint(0, spec.train_size, (CHECK_ENTRIES,), generator=generator)
    views = torch.randint(0, VIEWS_PER_IMAGE, (CHECK_ENTRIES,), generator=generator)
    mean, std = (torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (spec.mean, spec.std))
    with torch.inference_mode(), amp_context(device, spec.amp):
        batch = views_of(images[samples].to(device), views.to(device), mean, std, channels_last)
        fresh = teacher_outputs(teacher, batch, tuple(bank.arrays), BUILD_BATCH.get(device.type, 64))
    stored = dict(zip(OUTPUTS, bank.lookup(samples, views)))
    for name in bank.arrays:
        expected, found = fresh[name].cpu().double(), stored[name].cpu().double()
        tolerance = max(CHECK_TOLERANCE, CHECK_ULPS * torch.finfo(fresh[name].dtype).eps)
        if not torch.all((found - expected).abs() <= tolerance * (1 + expected.abs())):
            raise UserError(damaged(bank.folder, f"its {name} differ from the teacher's own outputs (largest "
                                                 f"difference {(found - expected).abs().max():.3g})"))


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
