"""Our numbers beside the published ones: difference, 95% interval, verdict, and how the settings differ.

Published numbers and the settings they were obtained with come from the recipe files (recipes/, one
per published table). A group of runs is compared with the cell of its dataset, pair and method whose
settings it has (a run trained with --recipe: its recorded recipe); where it departs from the nearest
cell, each departure is named and the row gets no verdict. Published teacher accuracies come from the
tables' [[teacher]] entries; a teacher is the published one only when its content says so
(``teacher_note``). The interval is Student's t interval for the mean of our trials' best
accuracies.

    python -m reporting.reproduction save/ [--table dkd-cifar100]    # print the table (markdown)
"""
from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import recipes
from distiller_zoo import METHODS
from helper.errors import report_user_errors
from helper.options import SMALL_LR_ARCHS
from helper.published_teachers import FETCH_SCRIPT, RECORD_FILE, conflicts_with_table, published_by_digest
from reporting.run_settings import SHORT_DIGEST, teacher_cell
from reporting.runs import Group, Run, group_runs, plain_number, scan

PROTOCOL_EPOCHS, PROTOCOL_BATCH_SIZE = 240, 64
CONFIDENCE = 0.95
SPREAD_MIN_TRIALS = 3
TEACHER_METHODS = ("teacher (used)", "teacher (trained here)")  # the method cell of the teacher rows
NO_COUNTERPART = "no published counterpart at these settings"
NOT_RUN = "not run"


@dataclass
class Comparison:
    """One row of the reproduction table: one group of our runs (or one teacher) against a published number."""

    dataset: str
    pair: str                       # 'resnet32x4 3f2a9c0d -> resnet8x4' (teacher digest), the teacher alone for a teacher row
    method: str                     # the summary's column name, 'teacher' for a teacher row
    published: float
    best: list[float]               # our runs' best test accuracies (one per trial)
    last: list[float]
    protocol: list[str] = field(default_factory=list)   # how the runs differ from the recipe (and the teacher)
    recipe: str = ""                # the recipe cell compared with (teacher rows: its table)
    departs: bool = False           # the settings differ from the recipe's: no verdict
    unchecked: bool = False         # the recipe's number or settings could not be checked against its source

    @property
    def n(self) -> int:
        return len(self.best)

    @property
    def interval(self) -> tuple[float, float] | None:
        return t_interval(self.best)

    @property
    def verdict(self) -> str:
        if not self.best:
            return NOT_RUN
        return NO_COUNTERPART if self.departs else verdict(self.published, self.interval)

    @property
    def difference(self) -> float | None:
        return statistics.fmean(self.best) - self.published if self.best else None


def t_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Student's t interval for the mean of ``values`` (sample std, n-1 degrees of freedom); None for n < 2."""
    from scipy import stats

    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    half_width = stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean - half_width, mean + half_width


def verdict(published: float, interval: tuple[float, float] | None) -> str:
    """'consistent' when the published value lies in our interval (ends included), 'ours lower' / 'ours
    higher' when the whole interval lies below / above it, 'n too small' without an interval."""
    if interval is None:
        return "n too small"
    low, high = interval
    if published < low:
        return "ours higher"
    if published > high:
        return "ours lower"
    return "consistent"


def sweep_name(run: Run) -> str:
    """The recipe method name of a run: its --distill key, KEY+kd for a method without a KD term run with one."""
    method = METHODS.get(run.method)
    with_kd = method is not None and method.default_alpha == 0 and (run.alpha or 0) > 0
    return f"{run.method}+kd" if with_kd else run.method


def run_settings(run: Run) -> dict[str, Any]:
    """The run's settings, with the loss weights of its folder name where the settings lack them."""
    weights = {"gamma": run.gamma, "alpha": run.alpha, "beta": run.beta}
    return {**{name: value for name, value in weights.items() if value is not None}, **run.settings}


def departures(run: Run, cell: recipes.Cell) -> list[str]:
    """Each setting in which the run departs from the cell: 'dkd_beta 8 (recipe 2)'."""
    return [f"{name} {plain_value(ours)} (recipe {plain_value(theirs)})"
            for name, (ours, theirs) in recipes.departures(cell, run_settings(run)).items()]


def plain_value(value: Any) -> str:
    return plain_number(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def matching_cells(run: Run) -> list[tuple[recipes.Cell, list[str]]]:
    """The cells a run is compared with and its departures from each: the cell of its recorded recipe;
    else every cell of its dataset, pair and method that it matches in every setting; else the nearest
    such cell (fewest departures); [] when no table has its dataset, pair and method."""
    recorded = (run.recipe or {}).get("name")
    cell = recipes.find_cell_or_none(recorded) if isinstance(recorded, str) else None
    if cell is not None:
        return [(cell, departures(run, cell))]
    candidates = [cell for cell in recipes.all_cells() if (cell.dataset, cell.teacher, cell.student, cell.distill)
                  == (run.dataset, run.teacher, run.student, run.method)]
    scored = [(cell, departures(run, cell)) for cell in candidates]
    exact = [(cell, found) for cell, found in scored if not found]
    if exact or not scored:
        return exact
    return [min(scored, key=lambda pair: (len(pair[1]), pair[0].method != sweep_name(run)))]


def teacher_records(run: Run) -> list[Path]:
    """The fetch records that may list the run's teacher: beside its teacher file
    (``<SAVE_DIR>/<arch>_vanilla/ckpt_epoch_240.pth`` -> ``<SAVE_DIR>/published_teachers.json``) and in the
    ``models/`` folder of the nearest folder above the run that has one (its save folder)."""
    places = [Path(run.teacher_path).parent.parent / RECORD_FILE] if run.teacher_path else []
    nearest = next((parent / "models" / RECORD_FILE for parent in Path(run.path).resolve().parents
                    if (parent / "models" / RECORD_FILE).is_file()), None)
    return places + ([nearest] if nearest else [])


def is_published_teacher(run: Run) -> bool | None:
    """Whether the run's teacher is a published checkpoint, known by its content: its weights digest is in
    the table of published teachers (helper/published_teachers.py) or in the record of the files that
    scripts/fetch_pretrained_teachers.sh fetched and verified; None for a run that recorded no digest."""
    if not run.teacher_digest:
        return None
    return published_by_digest(run.teacher_digest, teacher_records(run)) is not None


def is_published_checkpoint(run: Run) -> bool:
    """Whether a checkpoint without training options (a vanilla run of method 'published', e.g.
    ``save/models/<arch>_vanilla/ckpt_epoch_240.pth``) is a published teacher, known by its weights digest:
    in the table of published teachers or in the fetch record of its folder."""
    return bool(run.weights_digest) and published_by_digest(
        run.weights_digest, [Path(run.path).parent / RECORD_FILE]) is not None


def teacher_note(run: Run) -> str:
    """'' for a published teacher, else what is known of the teacher: the protocol note of the teacher's
    row and of every row of its students."""
    published = is_published_teacher(run)
    if published:
        return ""
    if published is None:
        return "teacher file unknown (the run recorded no teacher digest)"
    digest = run.teacher_digest[:SHORT_DIGEST]
    if run.teacher_dataset or conflicts_with_table(run.teacher, run.teacher_digest):
        return f"teacher {digest} is not the published checkpoint"
    return f"teacher {digest} unknown (not fetched by {FETCH_SCRIPT})"


def schedule_differences(run: Run) -> list[str]:
    """How a teacher trained here differs from the published teachers' schedule (240 epochs, batch 64,
    lr 0.05; lr 0.01 for MobileNetV2 and ShuffleNet)."""
    expected = {"epochs": PROTOCOL_EPOCHS, "batch_size": PROTOCOL_BATCH_SIZE,
                "learning_rate": 0.01 if run.student in SMALL_LR_ARCHS else 0.05}
    return [f"{name} {plain_number(run.settings[name])} (published {plain_number(value)})"
            for name, value in expected.items() if name in run.settings and run.settings[name] != value]




def protocol_differences(run: Run, cell: recipes.Cell) -> tuple[list[str], bool]:
    """How a distillation run differs from a recipe cell: its departures (each setting), then the
    teacher; and whether it departs in a setting (no verdict then)."""
    note = teacher_note(run)
    teacher = [note] if note else []
    if not run.settings:
        return ["settings unknown (no checkpoint)", *teacher], True
    found = departures(run, cell)
    return found + teacher, bool(found)


def student_comparisons(groups: list[Group], table: str | None = None) -> list[Comparison]:
    """A row for every averaged distillation group and recipe cell it is compared with (of ``table``
    only, when given)."""
    rows = []
    for group in groups:
        run = group.first
        if run.kind != "student" or group.apart:
            continue
        for cell, _ in matching_cells(run):
            if table is not None and cell.table != table:
                continue
            protocol, departs = protocol_differences(run, cell)
            pair = f"{teacher_cell(run.teacher, run.teacher_digest, None)} -> {run.student}"
            rows.append(Comparison(run.dataset, pair, group.column, cell.published, group.values("best_acc"),
                                   group.values("last_acc"), protocol, cell.name, departs, not cell.checked))
    return rows


def teacher_comparisons(groups: list[Group], table: str | None = None) -> list[Comparison]:
    """The teachers the distillation runs used, and the teachers trained here from scratch, against the
    published teacher accuracies (of ``table``'s [[teacher]] entries only, when given)."""
    rows, seen = [], set()
    for group in groups:
        run = group.first
        if group.apart:
            continue
        if table is not None and recipes.load_table(table).dataset != run.dataset:
            continue
        published = (recipes.load_table(table).teachers if table is not None
                     else recipes.published_teachers(run.dataset))
        if run.kind == "student" and run.teacher in published and run.teacher_acc is not None:
            key = (run.teacher, run.teacher_digest or round(run.teacher_acc, 2))
            if key not in seen:
                seen.add(key)
                name = teacher_cell(run.teacher, run.teacher_digest, None)
                note = teacher_note(run)
                rows.append(Comparison(run.dataset, name, "teacher (used)", published[run.teacher],
                                       [run.teacher_acc], [], [note] if note else []))
        elif run.kind == "vanilla" and run.method == "vanilla" and run.student in published:
            rows.append(Comparison(run.dataset, run.student, "teacher (trained here)",
                                   published[run.student], group.values("best_acc"),
                                   group.values("last_acc"), schedule_differences(run)))
    return rows


def comparisons(groups: list[Group], table: str | None = None) -> list[Comparison]:
    """The reproduction table of ``groups`` (sorted as the summary sorts them): teachers first, then
    students; of one recipe table when ``table`` is given."""
    return teacher_comparisons(groups, table) + student_comparisons(groups, table)


def table_report(groups: list[Group], table: str) -> list[Comparison]:
    """One recipe table in full: the rows of ``comparisons(groups, table)`` and a 'not run' row for
    each cell that no group has the settings of, in the file's order."""
    rows = comparisons(groups, table)
    done = {row.recipe for row in rows if not row.departs}
    for cell in recipes.load_table(table).cells:
        if cell.name not in done:
            rows.append(Comparison(cell.dataset, f"{cell.teacher} -> {cell.student}", cell.label, cell.published,
                                   [], [], [], cell.name))
    return rows


# ---------------------------------------------------------------------------------------------------
# output

COLUMNS = ["dataset", "pair", "method", "published", "n", "best_mean", "best_std", "best_min", "best_max",
           "last_mean", "last_std", "difference", "interval_low", "interval_high", "verdict", "protocol", "recipe",
           "recipe_checked"]
EXPLANATION = (
    "Published: the authors' top-1 (%) of the recipe (recipes/<table>.toml: the published number and the "
    "settings it was obtained with; teachers: the tables' published teachers). Ours: mean ± sample std of the "
    "best test accuracy over n trials, and of the last epoch's. 95% interval: Student's t interval for the mean "
    "of our trials (n-1 degrees of freedom); with 3 trials it is about ±2.5 std wide, so only large gaps "
    "show. Verdict: *consistent* when the published value lies in the interval, *ours lower* / *ours higher* "
    "when it lies above / below the whole interval, *n too small* for one trial. Published numbers are "
    "themselves means (or medians) of a few runs, with their own spread. Each group is compared with the "
    "recipe of its dataset, pair and method whose settings it has (runs trained with --recipe: that recipe); "
    "where its settings depart from the nearest recipe, the last columns name each departure ('dkd_beta 8 "
    f"(recipe 2)') and the verdict is *{NO_COUNTERPART}*: the numbers are not the paper's experiment. A "
    "teacher that is not the published checkpoint is named too. A recipe whose number or settings could not "
    "be checked against its source (its note says why) gives *(recipe unchecked)* after the verdict and "
    "*as the recipe* in the last columns. min-max is shown for 3 or more trials.")


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def as_record(row: Comparison) -> dict[str, Any]:
    """One row as plain values (None where there is no number), for JSON and CSV."""
    best_mean, best_std = _stats(row.best)
    last_mean, last_std = _stats(row.last)
    spread = len(row.best) >= SPREAD_MIN_TRIALS
    low, high = row.interval or (None, None)
    return {"dataset": row.dataset, "pair": row.pair, "method": row.method, "published": row.published, "n": row.n,
            "best_mean": best_mean, "best_std": best_std, "best_min": min(row.best) if spread else None,
            "best_max": max(row.best) if spread else None, "last_mean": last_mean, "last_std": last_std,
            "difference": row.difference, "interval_low": low, "interval_high": high, "verdict": row.verdict,
            "protocol": "; ".join(row.protocol), "recipe": row.recipe, "recipe_checked": not row.unchecked}


def csv_record(row: Comparison) -> dict[str, str]:
    """``as_record`` with numbers to 4 decimals and empty cells for missing ones."""
    return {key: "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
            for key, value in as_record(row).items()}


def _mean_std_cell(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def markdown_row(row: Comparison) -> list[str]:
    """The markdown cells of one row."""
    values = as_record(row)
    spread = "-" if values["best_min"] is None else f"{values['best_min']:.2f}-{values['best_max']:.2f}"
    interval = "-" if row.interval is None else f"[{row.interval[0]:.2f}, {row.interval[1]:.2f}]"
    difference = "-" if row.difference is None else f"{row.difference:+.2f}"
    verdict_cell = row.verdict + (" (settings differ)" if row.protocol and not row.departs and row.best else "")
    if row.unchecked and row.best and not row.departs:
        verdict_cell += " (recipe unchecked)"
    as_published = "as the recipe (not checked against its source)" if row.unchecked else "as published"
    differs = "; ".join(row.protocol) or (as_published if row.best else "-")
    return [row.dataset, row.pair, row.method, f"{row.published:.2f}",
            f"{_mean_std_cell(values['best_mean'], values['best_std'])} ({row.n})", spread,
            _mean_std_cell(values["last_mean"], values["last_std"]), difference, interval, verdict_cell,
            differs, row.recipe or "-"]


MARKDOWN_HEADER = ["dataset", "teacher -> student", "method", "published", "ours best (n)", "min-max", "ours last",
                   "ours - published", "95% interval", "verdict", "differs from the recipe", "recipe"]


def heat_maps(rows: list[Comparison], folder: Path) -> list[Path]:
    """One PNG per dataset: rows methods, columns pairs, colour ours minus published (points, diverging,
    centred at 0), cells annotated with the difference and n ('*': settings differ), blank without a
    published number."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    written = []
    for dataset in sorted({row.dataset for row in rows if row.method not in TEACHER_METHODS}):
        cells = {(row.method, row.pair): row for row in rows
                 if row.dataset == dataset and row.method not in TEACHER_METHODS and row.difference is not None}
        if not cells:  # no group of this dataset has an accuracy to compare
            continue
        methods = list(dict.fromkeys(method for method, _ in cells))
        pairs = list(dict.fromkeys(pair for _, pair in cells))
        grid = np.full((len(methods), len(pairs)), np.nan)
        for (method, pair), row in cells.items():
            grid[methods.index(method), pairs.index(pair)] = row.difference
        limit = max(float(np.nanmax(np.abs(grid))), 0.5)
        figure, axis = plt.subplots(figsize=(max(2.2 * len(pairs) + 3, 6.5), 0.5 * len(methods) + 2))
        image = axis.imshow(np.ma.masked_invalid(grid), cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        for (method, pair), row in cells.items():
            mark = "*" if row.protocol else ""
            axis.text(pairs.index(pair), methods.index(method), f"{row.difference:+.2f}{mark}\nn={row.n}",
                      ha="center", va="center", fontsize=8,
                      color="white" if abs(row.difference) > 0.6 * limit else "black")
        axis.set_xticks(range(len(pairs)), pairs, rotation=20, ha="right", fontsize=8)
        axis.set_yticks(range(len(methods)), methods, fontsize=8)
        figure.colorbar(image, ax=axis, label="ours - published (points)")
        axis.set_title(f"{dataset}: best test top-1, ours minus published\n(* our settings differ from the paper's)",
                       fontsize=9)
        figure.tight_layout()
        path = folder / f"reproduction_{dataset}.png"
        folder.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def markdown(rows: list[Comparison]) -> str:
    """The rows as a markdown table."""
    lines = ["| " + " | ".join(MARKDOWN_HEADER) + " |", "|" + "---|" * len(MARKDOWN_HEADER)]
    return "\n".join(lines + ["| " + " | ".join(markdown_row(row)) + " |" for row in rows])


@report_user_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Our runs beside the published numbers of the recipes.")
    parser.add_argument("save_folder", nargs="?", default="save", help="the runs' --save_folder")
    parser.add_argument("--table", default=None, help="one recipe table, every cell (not run ones too), e.g. "
                        "dkd-cifar100 (default: every group that has a published counterpart)")
    opt = parser.parse_args(argv)
    table = recipes.load_table(opt.table) if opt.table else None
    groups = group_runs(scan(Path(opt.save_folder)))
    rows = table_report(groups, table.name) if table else comparisons(groups)
    if table:
        print(f"{table.title}\nsource: {table.source}\n")
    print(markdown(rows) if rows else f"No run under '{opt.save_folder}' has a published counterpart.")
    print(f"\n{EXPLANATION}")


if __name__ == "__main__":
    main()
