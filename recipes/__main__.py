"""The recipe tables from the command line (scripts/reproduce.sh calls it).

    python -m recipes --list                      # every table: name, cells, title, source
    python -m recipes --cells dkd-cifar100        # the table's recipe names, one per line
    python -m recipes --estimate dkd-cifar100 --trials 3 [--epochs 1]   # the training time it takes
    python -m recipes --cells crd-cifar100 --pairs resnet56:resnet20 --methods "kd crd+kd"   # some cells
"""
from __future__ import annotations

import argparse
import functools
import math

import recipes
from distiller_zoo import METHODS
from helper.errors import UserError, did_you_mean, report_user_errors

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


def selected(table: recipes.Table, pairs: str = "", methods: str = "") -> list[recipes.Cell]:
    """The cells of ``table`` whose pair is in ``pairs`` ('teacher:student ...') and method in
    ``methods`` ('kd crd+kd ...'); empty strings select all. A name no cell has is refused."""
    wanted_pairs = [tuple(pair.split(":", 1)) for pair in pairs.split()]
    wanted_methods = methods.split()
    known_pairs = {(cell.teacher, cell.student) for cell in table.cells}
    known_methods = {cell.method for cell in table.cells}
    for pair in wanted_pairs:
        if pair not in known_pairs:
            listed = " ".join(sorted(f"{teacher}:{student}" for teacher, student in known_pairs))
            raise UserError(f"PAIRS: the table {table.name} has no pair '{':'.join(pair)}'; its pairs: {listed}.")
    for method in wanted_methods:
        if method not in known_methods:
            raise UserError(f"METHODS: the table {table.name} has no method '{method}'."
                            f"{did_you_mean(method, known_methods)} Its methods: {' '.join(sorted(known_methods))}.")
    return [cell for cell in table.cells if (not wanted_pairs or (cell.teacher, cell.student) in wanted_pairs)
            and (not wanted_methods or cell.method in wanted_methods)]


def estimate(table: recipes.Table, cells: list[recipes.Cell], trials: int, epochs: int | None) -> str:
    """A paragraph: ``cells`` x ``trials`` and the hours they take on the benchmark machine."""
    if table.dataset not in TRAIN_IMAGES:
        return f"No time estimate for {table.dataset}: the benchmark measured CIFAR only."
    hours = 0.0
    for cell in cells:
        run_epochs = epochs or int(cell.expected()["epochs"])
        method = METHODS[cell.distill]
        if method.init_stage:
            run_epochs += int(cell.settings.get("init_epochs", cell.expected().get("init_epochs", 0)))
        hours += run_epochs * TRAIN_IMAGES[table.dataset] / images_per_second(cell.teacher, cell.student) / 3600
    runs = len(cells) * trials
    return (f"estimate: {runs} runs ({len(cells)} cells x {trials} trials), about {hours * trials:,.0f} "
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
    parser.add_argument("--pairs", default="", help="only these pairs, e.g. 'resnet56:resnet20 vgg13:vgg8'")
    parser.add_argument("--methods", default="", help="only these methods, e.g. 'kd crd+kd'")
    opt = parser.parse_args(argv)
    if opt.list:
        print(listing())
        return
    table = recipes.load_table(opt.cells or opt.estimate)
    cells = selected(table, opt.pairs, opt.methods)
    if opt.cells:
        print("\n".join(cell.name for cell in cells))
    else:
        print(estimate(table, cells, opt.trials, opt.epochs))


if __name__ == "__main__":
    main()
