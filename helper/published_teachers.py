"""Which teacher checkpoints are the published CIFAR-100 teachers, known by content, not by file name.

The teachers of the CRD paper (Tian et al., ICLR 2020) were published by RepDistiller as
``<arch>_vanilla/ckpt_epoch_240.pth`` and re-published unchanged in mdistiller's ``cifar_teachers.tar``.
A checkpoint is one of them when its content matches:

- ``PUBLISHED``, the table below: for each teacher the SHA-256 of the file's bytes and the weights
  digest (``helper.provenance.weights_digest``, what a run records of its teacher) wherever one has been
  published and can be cited; ``None`` where none is known. Fill a missing value from the real files
  with ``python scripts/verify_checkpoint.py --digests <file> <arch>``.
- or the fetch record, ``<SAVE_DIR>/published_teachers.json``, which
  ``scripts/fetch_pretrained_teachers.sh`` writes for each file it downloaded itself, loaded strictly
  into its architecture, and found consistent with the table. A file put in place by hand is never
  added to it.
"""
from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helper.errors import UserError
from helper.util import atomic_write

RECORD_FILE = "published_teachers.json"
RECORD_FORMAT = 1
CHECKPOINT = "ckpt_epoch_240.pth"
FETCH_SCRIPT = "scripts/fetch_pretrained_teachers.sh"


@dataclass(frozen=True)
class PublishedTeacher:
    """What is known of one published teacher file's content, and where that knowledge comes from."""

    file_sha256: str | None = None      # SHA-256 of the file's bytes
    weights_digest: str | None = None   # helper.provenance.weights_digest of its 'model' weights
    source: str = ""                    # who published the checksum


PUBLISHED: dict[str, PublishedTeacher] = {
    "resnet32x4": PublishedTeacher(
        file_sha256="22aa12e2b632b19ddde155ccf2388671842ddd304824b3095e0a7fff364beb4f",
        source="github.com/ChenBill900703/CRD-Reproduction (runs/*/teacher.json): the file downloaded from "
               "RepDistiller's host, evaluated there at 79.42% top-1 on the CIFAR-100 test set"),
    "wrn_40_2": PublishedTeacher(),
    "resnet56": PublishedTeacher(),
    "resnet110": PublishedTeacher(),
    "vgg13": PublishedTeacher(),
    "ResNet50": PublishedTeacher(),
}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def table_mismatch(arch: str, weights_digest: str, sha256: str) -> str | None:
    """How a file of ``arch`` contradicts the table ('its SHA-256 ... differs from the published ...'),
    or None when it agrees with it or the table knows no checksum of ``arch``."""
    known = PUBLISHED.get(arch)
    if known is None:
        return None
    if known.weights_digest and weights_digest != known.weights_digest:
        return f"its weights digest {weights_digest} differs from the published {known.weights_digest}"
    if known.file_sha256 and sha256 != known.file_sha256:
        return f"its SHA-256 {sha256} differs from the published {known.file_sha256} ({known.source})"
    return None


def in_table(arch: str, weights_digest: str, sha256: str | None = None) -> bool:
    """Whether the table confirms the file: its weights digest, or its bytes' SHA-256, is the published one."""
    known = PUBLISHED.get(arch)
    if known is None:
        return False
    return bool(known.weights_digest and weights_digest == known.weights_digest
                or known.file_sha256 and sha256 == known.file_sha256)


def read_record(path: Path) -> list[dict[str, Any]]:
    """The entries of a fetch record (one per file fetched and verified); [] when there is none. A damaged
    record is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        entries = record["teachers"]
        if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
            raise ValueError("'teachers' is not a list of entries")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"The record of fetched teachers '{path}' is damaged ({type(error).__name__}: {error}). "
                        f"Delete it and run `sh {FETCH_SCRIPT}` again: it re-verifies the teachers it "
                        "downloads.") from None
    return entries


def add_to_record(path: Path, arch: str, weights_digest: str, sha256: str, source: str, checked: str) -> None:
    """Add (or refresh) the entry of one fetched and verified file in the record at ``path``, atomically."""
    path = Path(path)
    entries = [entry for entry in read_record(path) if entry.get("weights_digest") != weights_digest]
    entries.append({"arch": arch, "weights_digest": weights_digest, "file_sha256": sha256, "source": source,
                    "checked": checked,
                    "fetched": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    document = {"format": RECORD_FORMAT, "written_by": FETCH_SCRIPT, "teachers": entries}
    atomic_write(path, lambda handle: handle.write((json.dumps(document, indent=1) + "\n").encode()))


def record_entry(path: Path, arch: str, weights_digest: str) -> dict[str, Any] | None:
    """The record's entry for a file of ``arch`` with this weights digest, or None."""
    return next((entry for entry in read_record(path)
                 if entry.get("arch") == arch and entry.get("weights_digest") == weights_digest), None)


def published_by_digest(weights_digest: str, records: list[Path]) -> str | None:
    """How a weights digest is known to be a published teacher's: 'in the table of published teachers', or
    'fetched from <url>' (the first of ``records`` that lists it); None when neither knows it. Records
    that cannot be read are skipped (``read_record`` says why)."""
    for arch, known in PUBLISHED.items():
        if known.weights_digest == weights_digest:
            return f"{arch} in the table of published teachers"
    for path in records:
        try:
            entries = read_record(path)
        except UserError:
            continue
        for entry in entries:
            if entry.get("weights_digest") == weights_digest:
                return f"fetched from {entry.get('source')} by {FETCH_SCRIPT}"
    return None


def conflicts_with_table(arch: str, weights_digest: str) -> bool:
    """Whether the table knows the weights digest of ``arch`` and it is another one."""
    known = PUBLISHED.get(arch)
    return bool(known and known.weights_digest and known.weights_digest != weights_digest)
