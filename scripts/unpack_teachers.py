"""Copy teacher checkpoints out of a downloaded archive (used by fetch_pretrained_teachers.sh).

    python scripts/unpack_teachers.py cifar_teachers.tar save/models resnet56 vgg13

For each ARCH, the archive member ``.../<ARCH>_vanilla/ckpt_epoch_240.pth`` (at any depth, e.g.
mdistiller's ``cifar_teachers/resnet56_vanilla/ckpt_epoch_240.pth``) is written to
``<SAVE_DIR>/<ARCH>_vanilla/ckpt_epoch_240.pth.part``; nothing else is extracted, and member
names never become paths. Prints the names of the teachers the archive does not hold, one per
line. Exit status 0, or 1 with a message when the archive cannot be read.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
from pathlib import Path

CHECKPOINT = "ckpt_epoch_240.pth"


def find_member(archive: tarfile.TarFile, arch: str) -> tarfile.TarInfo | None:
    """The regular-file member ``[.../]<arch>_vanilla/ckpt_epoch_240.pth`` (shortest path first)."""
    wanted = f"{arch}_vanilla/{CHECKPOINT}"
    matches = [member for member in archive.getmembers() if member.isfile()
               and (member.name == wanted or member.name.endswith("/" + wanted))]
    return min(matches, key=lambda member: len(member.name)) if matches else None


def unpack(archive_path: Path, save_dir: Path, archs: list[str]) -> list[str]:
    """Write each arch's checkpoint to ``<save_dir>/<arch>_vanilla/ckpt_epoch_240.pth.part``;
    return the archs the archive lacks."""
    missing = []
    with tarfile.open(archive_path, "r:*") as archive:
        for arch in archs:
            member = find_member(archive, arch)
            if member is None:
                missing.append(arch)
                continue
            target = save_dir / f"{arch}_vanilla" / f"{CHECKPOINT}.part"
            target.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None  # a regular file always has contents
            with source, open(target, "wb") as handle:
                shutil.copyfileobj(source, handle, length=1 << 20)
    return missing


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description="Copy <arch>_vanilla/ckpt_epoch_240.pth files out of an archive.")
    parser.add_argument("archive", type=Path, help="a .tar, .tar.gz or .tgz file")
    parser.add_argument("save_dir", type=Path, help="where <arch>_vanilla/ folders go")
    parser.add_argument("archs", nargs="+", help="teacher architectures, e.g. resnet56 vgg13")
    args = parser.parse_args(argv)
    try:
        missing = unpack(args.archive, args.save_dir, args.archs)
    except (tarfile.TarError, OSError, EOFError) as error:
        print(f"unpack_teachers: error: '{args.archive}' is not a readable tar archive ({type(error).__name__}: "
              f"{error}).", file=sys.stderr)
        return 1
    for arch in missing:
        print(arch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
