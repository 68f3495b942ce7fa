"""Tell the sweep scripts whether a run is finished, unfinished or missing.

    python scripts/run_status.py <run_dir> <model> <epochs>      # prints finished | unfinished | missing
    python scripts/run_status.py --find <folder> <model> <epochs> key=value ...
        # the same, for the run under <folder> whose saved options match every key=value
        # (used for transfer runs, whose folder name the sweep does not compute)
    python scripts/run_status.py --teacher_arch <teacher checkpoint>   # prints the teacher's arch

A run is finished when ``<run_dir>/<model>_last.pth`` is a main-stage checkpoint of epoch >=
``epochs`` (the rule train_student.py uses to refuse overwriting it); unfinished when that file
exists otherwise (or cannot be read); missing when it does not exist.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reporting.summary import read_state  # noqa: E402  (memory-mapped, weights_only checkpoint read)


def status_of(last: Path, epochs: int) -> str:
    """'finished', 'unfinished' or 'missing' for the last checkpoint ``last``."""
    if not last.is_file():
        return "missing"
    try:
        state = read_state(last)
    except Exception as error:  # a corrupt file: train_*.py --resume auto will explain it
        print(f"run_status: warning: cannot read '{last}' ({type(error).__name__}); treating the run as "
              "unfinished.", file=sys.stderr)
        return "unfinished"
    finished = (isinstance(state, dict) and state.get("stage", "main") == "main"
                and int(state.get("epoch", 0)) >= epochs and not state.get("partial"))
    return "finished" if finished else "unfinished"


def _same(saved: Any, wanted: str, key: str) -> bool:
    if saved is None:
        return False
    if key.startswith("path") or key.endswith("path"):
        return Path(str(saved)).expanduser().resolve() == Path(wanted).expanduser().resolve()
    if isinstance(saved, (int, float)) and not isinstance(saved, bool):
        try:
            return float(saved) == float(wanted)
        except ValueError:
            return False
    return str(saved) == wanted


def find_status(folder: Path, model: str, epochs: int, matches: list[str]) -> str:
    """Status of the run under ``folder`` whose saved 'opt' matches every ``key=value``."""
    wanted = dict(item.split("=", 1) for item in matches)
    best = "missing"
    for last in sorted(folder.rglob(f"{model}_last.pth")) if folder.is_dir() else []:
        try:
            opt = read_state(last).get("opt") or {}
        except Exception:
            continue
        opt = vars(opt) if isinstance(opt, argparse.Namespace) else opt
        if all(_same(opt.get(key), value, key) for key, value in wanted.items()):
            status = status_of(last, epochs)
            if status == "finished":
                return status
            best = status
    return best


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher_arch", metavar="PATH", help="print the architecture of this teacher checkpoint")
    parser.add_argument("--find", metavar="FOLDER", type=Path, help="search FOLDER for the run matching key=value")
    parser.add_argument("args", nargs="*", help="<run_dir> <model> <epochs> (with --find: <model> <epochs> k=v ...)")
    args = parser.parse_args(argv)

    if args.teacher_arch:
        from helper.checkpoint import load_checkpoint
        from helper.errors import UserError
        from train_student import teacher_arch

        try:
            print(teacher_arch(args.teacher_arch, load_checkpoint(Path(args.teacher_arch), "teacher checkpoint")))
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return 0
    if args.find is not None:
        if len(args.args) < 2 or not all("=" in item for item in args.args[2:]):
            parser.error("--find FOLDER needs <model> <epochs> [key=value ...]")
        print(find_status(args.find, args.args[0], int(args.args[1]), args.args[2:]))
        return 0
    if len(args.args) != 3:
        parser.error("expected <run_dir> <model> <epochs>")
    run_dir, model, epochs = args.args
    print(status_of(Path(run_dir) / f"{model}_last.pth", int(epochs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
