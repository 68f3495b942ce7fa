"""The recipe tables from the command line (scripts/reproduce.sh calls it).

    python -m recipes --list                      # every table: name, cells, title, source
    python -m recipes --cells dkd-cifar100        # the table's recipe names, one per line
    python -m recipes --estimate dkd-cifar100 --trials 3 [--epochs 1]   # the training time it takes
"""
from __future__ import annotations

import argparse
import functools
import math

import recipes
from distiller_zoo import METHODS
from helper.errors import report_user_errors

# What the time estimate rests on: the step rates bench/RESULTS.md measured for kd (fp32, defaults,
# batch 64) on its 2-core CPU, and each pair's cost in multiply-accumulates per image (teacher forward
# + 3 x student forward: forward and backward). The rate of a pair is CALIBRATION / its cost, with
# CALIBRATION the geometric mean over the measured pairs (it predicts both within 25%).
MEASURED_RATES = {("resnet32x4", "resnet8x4"): 44.0, ("resnet56", "resnet20"): 196.0}  # img/s
MEASURED_ON = "the 2-core CPU of bench/RESULTS.md (kd, fp32, batch 64)"
TRAIN_IMAGES = {"cifar100": 50_000, "cifar10": 50_000}


@functools.cache
def multiply_accumulates(arch: str, num_classes: int = 100) -> int:
    """Multiply-accumulates of one 32x32 image through ``arch`` (convolutions and linear layers)."""
    import torch

    from models import all_model_dict

    model = all_model_dict[arch](num_classes=num_classes).eval()
    total = 0

    def count(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            kernel = module.kernel_size[0] * module.kernel_size[1]
            total += output.numel() * module.in_channels // module.groups * kernel
        elif isinstance(module, torch.nn.Linear):
            total += output.numel() * module.in_features

    handles = [module.register_forward_hook(count) for module in model.modules()]
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    for handle in handles:
        handle.remove()
    return total


def step_cost(teacher: str, student: str) -> int:
    return multiply_accumulates(teacher) + 3 * multiply_accumulates(student)


def images_per_second(teacher: str, student: str) -> float:
    """The estimated kd training rate of a pair on the benchmark machine."""
    products = [rate * step_cost(*pair) for pair, rate in MEASURED_RATES.items()]
    calibration = math.exp(sum(math.log(product) for product in products) / len(products))
    return calibration / step_cost(teacher, student)


def estimate(table: recipes.Table, trials: int, epochs: int | None) -> str:
    """A paragraph: the runs of ``table`` x ``trials`` and the hours they take on the benchmark machine."""
    if table.dataset not in TRAIN_IMAGES:
        return f"No time estimate for {table.dataset}: the benchmark measured CIFAR only."
    hours = 0.0
    for cell in table.cells:
        run_epochs = epochs or int(cell.expected()["epochs"])
        method = METHODS[cell.distill]
        if method.init_stage:
            run_epochs += int(cell.settings.get("init_epochs", cell.expected().get("init_epochs", 0)))
        hours += run_epochs * TRAIN_IMAGES[table.dataset] / images_per_second(cell.teacher, cell.student) / 3600
    runs = len(table.cells) * trials
    return (f"estimate: {runs} runs ({len(table.cells)} cells x {trials} trials), about {hours * trials:,.0f} "
            f"device-hours on {MEASURED_ON}, from its measured kd step rates scaled by each pair's "
            "multiply-accumulates (teacher forward + 3 x student); rough: method overheads (e.g. CRD's "
            "+16%), a teacher bank and depthwise convolutions (MobileNetV2, ShuffleNet: slower than their "
            "count) are not modelled. bench/RESULTS.md has no GPU rate yet to estimate GPU hours from.")


def listing() -> str:
    lines = []
    for table in recipes.tables().values():
        unchecked = sum(not cell.checked for cell in table.cells)
        lines.append(f"{table.name}: {len(table.cells)} cells{f' ({unchecked} unchecked)' if unchecked else ''}, "
                     f"{table.dataset}\n  {table.title}\n  source: {table.source}"
                     + (f"\n  notes: {table.notes}" if table.notes else ""))
    return "\n".join(lines) or "No recipe tables."


@report_user_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--list", action="store_true", help="every table: name, cells, title, source")
    what.add_argument("--cells", metavar="TABLE", help="the table's recipe names, one per line")
    what.add_argument("--estimate", metavar="TABLE", help="how long training the table takes")
    parser.add_argument("--trials", type=int, default=3, help="trials per cell (--estimate)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of every run (--estimate; default: "
                        "the recipe's)")
    opt = parser.parse_args(argv)
    if opt.list:
        print(listing())
    elif opt.cells:
        print("\n".join(cell.name for cell in recipes.load_table(opt.cells).cells))
    else:
        print(estimate(recipes.load_table(opt.estimate), opt.trials, opt.epochs))


if __name__ == "__main__":
    main()
