"""Check that files are loadable checkpoints of given architectures (used after each download).

    python scripts/verify_checkpoint.py save/models/resnet56_vanilla/ckpt_epoch_240.pth resnet56
    python scripts/verify_checkpoint.py --status A.pth resnet56 B.pth vgg13   # 'resnet56 valid' ... per line

Loads each the way train_student.py loads a teacher (``weights_only=True``, then ``strict=True``
into ``model_dict[arch](num_classes=100)``), all in one process; a student whose method deploys
extra modules (SimKD: projector + teacher classifier, under 'deployed') must rebuild into that
network too. Exit status 0 when every file is valid; 1 with a message for each one that is not;
2 for a wrong command line.
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
    return f"{path} is a valid {arch} checkpoint" + (f" ({described})" if described else "")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description="Check that each PATH loads (strict) into model_dict[ARCH].")
    parser.add_argument("pairs", nargs="+", metavar="PATH ARCH", help="checkpoint file and its architecture")
    parser.add_argument("--num_classes", type=int, default=100)
    parser.add_argument("--status", action="store_true", help="print 'ARCH valid' or 'ARCH invalid' per pair")
    args = parser.parse_args(argv)
    if len(args.pairs) % 2:
        parser.error("give PATH ARCH pairs")

    from helper.errors import UserError

    all_valid = True
    for path, arch in zip(args.pairs[::2], args.pairs[1::2]):
        try:
            described = verify(Path(path), arch, args.num_classes)
        except UserError as error:
            described = None
            print(f"verify_checkpoint: error: {error}", file=sys.stderr)
        except Exception as error:  # anything else a malformed file can raise is also "invalid"
            described = None
            print(f"verify_checkpoint: error: '{path}' could not be loaded as a {arch} checkpoint "
                  f"({type(error).__name__}: {str(error)[:200]}).", file=sys.stderr)
        all_valid = all_valid and described is not None
        if args.status:
            print(f"{arch} {'valid' if described else 'invalid'}")
        elif described:
            print(described)
    return 0 if all_valid else 1


if __name__ == "__main__":
    sys.exit(main())
