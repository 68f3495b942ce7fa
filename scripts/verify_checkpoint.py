"""Check that a file is a loadable checkpoint of a given architecture (used after each download).

    python scripts/verify_checkpoint.py save/models/resnet56_vanilla/ckpt_epoch_240.pth resnet56

Loads it the way train_student.py loads a teacher (``weights_only=True``, then ``strict=True``
into ``model_dict[arch](num_classes=100)``); a student whose method deploys extra modules (SimKD:
projector + teacher classifier, under 'deployed') must rebuild into that network too. Exit status
0 when valid; 1 with a message saying what is wrong otherwise; 2 for a wrong command line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def verify(path: Path, arch: str, num_classes: int = 100) -> str:
    """Load ``path`` into a fresh ``arch`` model; return a one-line description, or raise UserError."""
    from helper.checkpoint import load_checkpoint, load_weights
    from helper.errors import UserError
    from models import model_dict

    if arch not in model_dict:
        raise UserError(f"Unknown architecture '{arch}'. Choose one of: {', '.join(model_dict)}.")
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
    return f"{path} is a valid {arch} checkpoint" + (f" ({described})" if described else "")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description="Check that PATH loads (strict) into model_dict[ARCH].")
    parser.add_argument("path", type=Path)
    parser.add_argument("arch")
    parser.add_argument("--num_classes", type=int, default=100)
    args = parser.parse_args(argv)

    from helper.errors import UserError

    try:
        print(verify(args.path, args.arch, args.num_classes))
    except UserError as error:
        print(f"verify_checkpoint: error: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # anything else a malformed file can raise is also "invalid"
        print(f"verify_checkpoint: error: '{args.path}' could not be loaded as a {args.arch} checkpoint "
              f"({type(error).__name__}: {str(error)[:200]}).", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
