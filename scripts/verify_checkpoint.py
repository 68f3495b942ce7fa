"""Check that files are loadable checkpoints of given architectures (used after each download).

    python scripts/verify_checkpoint.py save/models/resnet56_vanilla/ckpt_epoch_240.pth resnet56
    python scripts/verify_checkpoint.py --status A.pth resnet56 B.pth vgg13   # 'resnet56 valid' ... per line
    python scripts/verify_checkpoint.py --digests A.pth resnet56   # a JSON line: SHA-256 and weights digest

Loads each the way train_student.py loads a teacher (``weights_only=True``, then ``strict=True``
into ``model_dict[arch](num_classes=100)``), all in one process; a student whose method deploys
extra modules (SimKD: projector + teacher classifier, under 'deployed') must rebuild into that
network too. ``--published RECORD`` also checks each file against the published teachers
(``helper/published_teachers.py``: the table, and the fetch record RECORD): with ``--status`` a line
says 'ARCH published' (confirmed by the table or the record), 'ARCH unverified' (it loads; nothing
to compare it with), 'ARCH other' (it loads but is not the published file) or 'ARCH invalid';
``--fetched-from URL`` adds each file that loads and does not contradict the table to RECORD.
Exit status 0 when every file is valid (and, with ``--published``, none is 'other'); 1 with a
message for each one that is not; 2 for a wrong command line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_verified(path: Path, arch: str, num_classes: int = 100) -> tuple[dict[str, Any], str]:
    """Load ``path`` strictly into a fresh ``arch`` model; return (its state, a one-line description),
    or raise UserError."""
    from helper.checkpoint import load_checkpoint, load_weights
    from helper.errors import UserError, did_you_mean
    from models import model_dict

    if arch not in model_dict:
        raise UserError(f"Unknown architecture '{arch}'.{did_you_mean(arch, model_dict)} Choose one of: "
                        f"{', '.join(model_dict)}.")
    state = load_checkpoint(path, f"{arch} checkpoint")
    model = model_dict[arch](num_classes=num_classes)
    load_weights(model, state, path, arch, "file")
    network = ""
    if state.get("deployed"):
        from distiller_zoo import deployed_from_checkpoint
        from distiller_zoo.base import resolve_method

        deployed_from_checkpoint(model, state)  # UserError when the deployed modules do not load
        network = f" of the deployed {resolve_method(str(state['deployed']['method'])).label()} network"
    details = [f"epoch {state['epoch']}" if "epoch" in state else None]
    accuracy = state.get("best_acc", state.get("accuracy"))
    if isinstance(accuracy, (int, float)) or hasattr(accuracy, "item"):
        details.append(f"accuracy {float(accuracy):.2f}{network}")
    described = ", ".join(d for d in details if d)
    return state, f"{path} is a valid {arch} checkpoint" + (f" ({described})" if described else "")


def verify(path: Path, arch: str, num_classes: int = 100) -> str:
    """Load ``path`` into a fresh ``arch`` model; return a one-line description, or raise UserError."""
    return load_verified(path, arch, num_classes)[1]


def published_status(path: Path, arch: str, state: dict[str, Any], record: Path,
                     fetched_from: str | None) -> tuple[str, str]:
    """('published' | 'unverified' | 'other', why) for a file that loads; with ``fetched_from``, a file
    that does not contradict the table is added to ``record`` first."""
    from helper import published_teachers as published
    from helper.provenance import weights_digest

    digest, sha256 = weights_digest(state["model"]), published.file_sha256(path)
    mismatch = published.table_mismatch(arch, digest, sha256)
    if mismatch:
        return "other", f"{path} loads as a {arch} but is not the published {arch} teacher: {mismatch}."
    confirmed = published.in_table(arch, digest, sha256)
    if fetched_from:
        checked = ("its SHA-256 is the published one" if confirmed else
                   f"loads strictly into {arch}; no published checksum to compare it with")
        published.add_to_record(record, arch, digest, sha256, fetched_from, checked)
        return "published", f"{path}: recorded in {record} (weights digest {digest})"
    if confirmed:
        return "published", f"{path} is the published {arch} teacher (its checksum is in the table)"
    entry = published.record_entry(record, arch, digest)
    if entry is not None and entry.get("file_sha256") == sha256:
        return "published", f"{path} is the file fetched from {entry.get('source')} (listed in {record})"
    return "unverified", (f"{path} loads as a {arch}, but no published checksum confirms it and {record} does "
                          "not list it as fetched")


def check_one(path: Path, arch: str, args: argparse.Namespace) -> str:
    """The status of one file ('valid', 'invalid', or with --published: 'published', 'unverified',
    'other'); its description, or the reason it fails, is printed."""
    from helper.errors import UserError
    from helper.provenance import weights_digest

    try:
        state, described = load_verified(path, arch, args.num_classes)
        status = "valid"
        if args.published is not None:
            status, described = published_status(path, arch, state, args.published, args.fetched_from)
    except UserError as error:
        print(f"verify_checkpoint: error: {error}", file=sys.stderr)
        return "invalid"
    except Exception as error:  # anything else a malformed file can raise is also "invalid"
        print(f"verify_checkpoint: error: '{path}' could not be loaded as a {arch} checkpoint "
              f"({type(error).__name__}: {str(error)[:200]}).", file=sys.stderr)
        return "invalid"
    if args.digests:
        from helper.published_teachers import file_sha256

        print(json.dumps({"arch": arch, "file_sha256": file_sha256(path),
                          "weights_digest": weights_digest(state["model"]), "path": str(path)}))
    elif status == "other":
        print(f"verify_checkpoint: error: {described}", file=sys.stderr)
    elif not args.status:
        print(described)
    return status


def drop_damaged_record(record: Path) -> None:
    """Delete a fetch record that cannot be read (saying so): it confirms nothing, and the fetch writes a
    new one for the files it downloads."""
    from helper.errors import UserError
    from helper.published_teachers import read_record

    try:
        read_record(record)
    except UserError as error:
        print(f"verify_checkpoint: warning: {error} It was deleted; files not fetched again count as unverified.",
              file=sys.stderr)
        record.unlink()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description="Check that each PATH loads (strict) into model_dict[ARCH].")
    parser.add_argument("pairs", nargs="+", metavar="PATH ARCH", help="checkpoint file and its architecture")
    parser.add_argument("--num_classes", type=int, default=100)
    parser.add_argument("--status", action="store_true", help="print 'ARCH <status>' per pair")
    parser.add_argument("--digests", action="store_true",
                        help="print a JSON line per valid file: its SHA-256 and weights digest (to fill the table "
                             "in helper/published_teachers.py)")
    parser.add_argument("--published", type=Path, metavar="RECORD", default=None,
                        help="also check each file against the published teachers: the table and this fetch record")
    parser.add_argument("--fetched-from", dest="fetched_from", metavar="URL", default=None,
                        help="with --published: add each file that loads and agrees with the table to RECORD")
    args = parser.parse_args(argv)
    if len(args.pairs) % 2:
        parser.error("give PATH ARCH pairs")
    if args.fetched_from and args.published is None:
        parser.error("--fetched-from needs --published RECORD")
    if args.published is not None:
        drop_damaged_record(args.published)

    all_valid = True
    for path, arch in zip(args.pairs[::2], args.pairs[1::2]):
        status = check_one(Path(path), arch, args)
        all_valid = all_valid and status not in ("invalid", "other")
        if args.status:
            print(f"{arch} {status}")
    return 0 if all_valid else 1


if __name__ == "__main__":
    sys.exit(main())
