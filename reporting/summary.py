"""Summarise the runs under a save folder: mean ± std over trials, the paper-layout table, curves.

    python -m reporting.summary save/ [--out DIR] [--format md|csv|json|both|all] [--plot]

Reads the runs with ``reporting.runs`` (finished runs with the same recorded settings and teacher,
differing only in ``--trial``, are pooled; the others are listed apart). Writes ``summary.md`` / ``summary.csv`` (and ``plots/*.png`` with
``--plot``) into ``--out`` (default: the save folder) and prints the markdown.

Every readable run is reported; each file that cannot be read, or only in part (a damaged or truncated
metrics.csv, run.json or checkpoint), is named in one line at the top of ``summary.md``, in ``summary.json``
and on stderr.

"best" is the best test top-1 during training (what the CRD/DCD/RRD papers report, averaged over
trials); "last" is the final epoch's. Standard deviations are sample std (n-1).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
from pathlib import Path
from typing import Any

from helper.errors import UserError, report_user_errors
from reporting import reproduction
from reporting.run_settings import teacher_cell
from reporting.runs import KINDS, Group, Run, column_order, group_runs, pair_order, plain_number, scan

FIXED_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "test_acc1", "test_acc5", "test_loss", "best_acc",
                 "epoch_seconds")


# ---------------------------------------------------------------------------------------------------
# tables

def _g_or_empty(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _epochs(group: Group) -> str:
    planned = group.epochs_planned
    return f"{group.epochs_done}/{planned if planned is not None else '?'}"


CSV_COLUMNS = ["kind", "dataset", "teacher", "student", "method", "distill", "gamma", "alpha", "beta", "settings",
               "trials", "trial_ids", "best_acc_mean", "best_acc_std", "last_acc_mean", "last_acc_std",
               "epochs_done", "epochs_planned", "unfinished", "listed_apart", "teacher_acc", "teacher_digest"]


def _four(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def csv_rows(groups: list[Group]) -> list[dict[str, Any]]:
    """One row per group (std empty for a single trial; accuracies with 4 decimals); ``settings`` names
    what tells groups of the same name apart, ``listed_apart`` why a run was not averaged."""
    rows = []
    for group in groups:
        run = group.first
        best, best_std = group.mean_std("best_acc")
        last, last_std = group.mean_std("last_acc")
        teacher_acc, _ = group.mean_std("teacher_acc")
        rows.append({"kind": run.kind, "dataset": run.dataset, "teacher": run.teacher, "student": run.student,
                     "method": group.weights_column, "distill": run.method, "gamma": _g_or_empty(run.gamma),
                     "alpha": _g_or_empty(run.alpha), "beta": _g_or_empty(run.beta), "settings": group.distinct,
                     "trials": len(group.runs), "trial_ids": " ".join(r.trial for r in group.runs),
                     "best_acc_mean": _four(best), "best_acc_std": _four(best_std), "last_acc_mean": _four(last),
                     "last_acc_std": _four(last_std), "epochs_done": group.epochs_done,
                     "epochs_planned": "" if group.epochs_planned is None else group.epochs_planned,
                     "unfinished": int(group.unfinished), "listed_apart": group.apart,
                     "teacher_acc": _four(teacher_acc), "teacher_digest": run.teacher_digest or ""})
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Lines of a markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _pivot_key(group: Group) -> tuple[str, str, str]:
    """(teacher arch, teacher digest, student): one pivot row per teacher file used (runs without a
    digest share a row; their teachers' accuracies tell their columns apart)."""
    run = group.first
    return run.teacher, run.teacher_digest or "", run.student


def pivot(groups: list[Group], dataset: str) -> tuple[list[str], list[list[str]]]:
    """Paper layout for ``dataset``: rows teacher -> student (one per teacher used), columns T, S and the
    methods (mean best acc of the averaged groups; runs listed apart are left out)."""
    averaged = [g for g in groups if not g.apart and g.first.dataset == dataset]
    students = [g for g in averaged if g.first.kind == "student"]
    own = [g for g in averaged if g.first.kind == "vanilla"]
    bases = {g.column: g.weights_column for g in students}
    columns = sorted(bases, key=lambda column: (column_order(bases[column]), column))
    rows = []
    for key in sorted({_pivot_key(g) for g in students}, key=lambda k: (pair_order(k[0], k[2]), k[1])):
        in_row = [g for g in students if _pivot_key(g) == key]
        teacher, _, student = key
        digest = in_row[0].first.teacher_digest
        teacher_accs = sorted({round(value, 2) for g in in_row for value in g.values("teacher_acc")})
        teacher_acc = " / ".join(map(_fmt, teacher_accs)) if teacher_accs else _own_cell(own, teacher)
        label = teacher_cell(teacher, digest, None)
        by_column = {g.column: g for g in in_row}
        rows.append([f"{label} -> {student}", teacher_acc, _own_cell(own, student),
                     *(_accuracy_cell(by_column.get(column)) for column in columns)])
    return ["teacher -> student", "T", "S", *columns], rows


def _own_cell(own: list[Group], model: str) -> str:
    """The T or S cell from the teachers and students trained from scratch (or published checkpoints):
    the trained groups' accuracies, each with its distinguishing settings when there are several."""
    trained = [g for g in own if g.first.student == model and g.first.method == "vanilla"]
    found = trained or [g for g in own if g.first.student == model and g.first.method == "published"]
    if len(found) == 1:
        return _accuracy_cell(found[0])
    return " / ".join(f"{_accuracy_cell(g)} ({g.distinct or g.first.teacher_identity})" for g in found) or "-"


def _accuracy_cell(group: Group | None) -> str:
    return "-" if group is None else _fmt(group.mean_std("best_acc")[0])


def _numbers(group: Group) -> list[str]:
    best, best_std = group.mean_std("best_acc")
    last, last_std = group.mean_std("last_acc")
    return [str(len(group.runs)), _fmt(best), _fmt(best_std), _fmt(last), _fmt(last_std), _epochs(group)]


def _with_distinct(text: str, group: Group) -> str:
    return f"{text} ({group.distinct})" if group.distinct else text


KIND_TITLES = {"student": "Distillation runs", "vanilla": "Vanilla runs (teachers and students trained from scratch)",
               "transfer": "Transfer runs (linear probe on the frozen distilled student)"}
RUN_HEADER = ["dataset", "teacher", "student", "method", "r", "a", "b", "trials", "best", "best std", "last",
              "last std", "epochs"]
VANILLA_HEADER = ["dataset", "model", "source", "trials", "best", "best std", "last", "last std", "epochs"]


def kind_table(groups: list[Group], kind: str) -> list[str]:
    """The averaged groups of one kind: one row each, the teacher as arch, short digest and accuracy."""
    rows = []
    for group in groups:
        run = group.first
        if run.kind != kind or group.apart:
            continue
        if kind == "vanilla":
            source = "trained" if run.method != "published" else (
                "published checkpoint" if reproduction.is_published_checkpoint(run) else
                "checkpoint not confirmed as published")
            rows.append([run.dataset, _with_distinct(run.student, group), source, *_numbers(group)])
        else:
            rows.append([run.dataset, group.teacher_cell, run.student, _with_distinct(run.label, group),
                         plain_number(run.gamma), plain_number(run.alpha), plain_number(run.beta), *_numbers(group)])
    if not rows:
        return []
    return [f"## {KIND_TITLES[kind]}", ""] + markdown_table(VANILLA_HEADER if kind == "vanilla" else RUN_HEADER,
                                                             rows) + [""]


def apart_table(groups: list[Group]) -> list[str]:
    """The runs not averaged with any other: unfinished, or resumed with different settings."""
    rows = []
    for group in groups:
        if group.apart:
            run = group.first
            method = run.student if run.kind == "vanilla" else _with_distinct(run.label, group)
            rows.append([run.kind, run.dataset, group.teacher_cell, run.student, method, run.trial,
                         _fmt(run.best_acc), _fmt(run.last_acc), _epochs(group), group.apart])
    if not rows:
        return []
    header = ["kind", "dataset", "teacher", "student", "method", "trial", "best", "last", "epochs", "why"]
    return (["## Listed apart (not averaged): unfinished runs and runs resumed with other settings", ""] +
        markdown_table(header, rows) + [""])


SUMMARY_INTRO = (
    "Top-1 test accuracy (%), mean ± sample std (n-1) over trials ('-' for one trial). **best** is the best test "
    "accuracy during training (what the CRD/DCD/RRD papers report, averaged over trials); **last** is the final "
    "epoch's. *epochs* is completed/planned. Only finished runs with the same recorded settings (all but seed and "
    "trial) and the same teacher file are averaged; where runs of one folder name differ, the settings that differ "
    "follow the method's name. The teacher is shown as arch, short content digest and test accuracy. Unfinished "
    "runs and runs resumed with other settings are listed apart.")


def reproduction_section(compared: list[reproduction.Comparison]) -> list[str]:
    """The reproduction table with how to read it ([] when no group has a published number)."""
    if not compared:
        return []
    return (["## Reproduction: ours against the published numbers", "", reproduction.EXPLANATION, ""] +
        markdown_table(reproduction.MARKDOWN_HEADER, [reproduction.markdown_row(row) for row in compared]) + [""])


def notices_section(notices: list[str]) -> list[str]:
    """The files that could not be read, or only in part, one line each ([] when there are none)."""
    if not notices:
        return []
    return ["## Files not read, or read in part", "",
            "Each line names a file and what was done without it; every other run is reported below.", "",
            *(f"- {line}" for line in notices), ""]


def markdown(groups: list[Group], save_folder: Path, compared: list[reproduction.Comparison] | None = None,
             notices: list[str] | None = None) -> str:
    """The whole summary.md: the files not read, the pivot table per dataset, the reproduction table, every
    averaged group per kind, the runs listed apart."""
    lines = [f"# Results summary: `{save_folder}`", "", SUMMARY_INTRO, "", *notices_section(notices or [])]
    for dataset in sorted({g.first.dataset for g in groups if g.first.kind == "student" and not g.apart}):
        header, rows = pivot(groups, dataset)
        lines += [f"## {dataset}: best test accuracy, teacher -> student (mean over trials)", "",
                  "T: the teacher's test accuracy; S: the student trained from scratch (vanilla runs).", ""]
        lines += markdown_table(header, rows) + [""]
    lines += reproduction_section(reproduction.comparisons(groups) if compared is None else compared)
    for kind in KINDS:
        lines += kind_table(groups, kind)
    return "\n".join(lines + apart_table(groups))


# ---------------------------------------------------------------------------------------------------
# plots

def mean_curve(runs: list[Run], column: str) -> tuple[list[float], list[float]]:
    """(epochs, mean over the runs that logged ``column`` at that epoch)."""
    values: dict[float, list[float]] = {}
    for run in runs:
        for row in run.rows:
            if column in row:
                values.setdefault(row["epoch"], []).append(row[column])
    epochs = sorted(values)
    return epochs, [statistics.fmean(values[e]) for e in epochs]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_")


def plot(groups: list[Group], folder: Path) -> list[Path]:
    """Accuracy and named-loss curves (mean over trials), one PNG pair per teacher -> student (and per
    dataset for vanilla runs, per target for transfer); returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels: dict[tuple[str, str], list[Group]] = {}
    for group in groups:
        run = group.first
        if run.kind == "student":
            key = (f"{run.dataset}_{run.teacher}_to_{run.student}", f"{run.dataset}: {run.teacher} -> {run.student}")
        elif run.kind == "vanilla":
            key = (f"{run.dataset}_vanilla", f"{run.dataset}: trained from scratch")
        else:
            key = (f"transfer_{run.dataset}_{run.student}", f"transfer to {run.dataset}: {run.student}")
        panels.setdefault(key, []).append(group)

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for (stem, title), members in panels.items():
        labelled = [(g.first.student if g.first.kind == "vanilla" else
                     (f"{g.first.teacher} {g.column}" if g.first.kind == "transfer" else g.column), g)
                    for g in members if any(r.rows for r in g.runs)]
        if not labelled:
            continue
        palette = plt.get_cmap("tab10" if len(labelled) <= 10 else "tab20")
        colour = {label: palette(index % palette.N) for index, (label, _) in enumerate(labelled)}  # same in every panel
        figure, axis = plt.subplots(figsize=(7, 4.5))
        for label, group in labelled:
            epochs, accuracy = mean_curve(group.runs, "test_acc1")
            if epochs:
                axis.plot(epochs, accuracy, label=f"{label} (n={len(group.runs)})", color=colour[label],
                          marker="." if len(epochs) < 20 else None)
        axis.set(title=f"{title}: test accuracy (mean over trials)", xlabel="epoch", ylabel="top-1 (%)")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, ncol=2)
        written.append(_save(figure, folder / f"{_slug(stem)}_acc.png"))

        losses = sorted({key for _, g in labelled for r in g.runs for row in r.rows for key in row}
                        - set(FIXED_COLUMNS), key=lambda name: ({"ce": 0, "kl": 1}.get(name, 2), name))
        if not losses:
            continue
        columns = min(3, len(losses))
        rows = math.ceil(len(losses) / columns)
        figure, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.3 * rows), squeeze=False)
        for axis, name in zip(axes.flat, losses):
            plotted: list[float] = []
            for label, group in labelled:
                epochs, values = mean_curve(group.runs, name)
                if epochs:
                    axis.plot(epochs, values, label=label, color=colour[label],
                              marker="." if len(epochs) < 20 else None)
                    plotted += values
            if plotted and min(plotted) > 0 and max(plotted) > 20 * min(plotted):  # spans decades
                axis.set_yscale("log")
            axis.set(title=f"loss '{name}'", xlabel="epoch")
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
            axis.grid(alpha=0.3)
            axis.legend(fontsize=6)
        for axis in list(axes.flat)[len(losses):]:
            axis.set_visible(False)
        figure.suptitle(f"{title}: training losses (unweighted, mean over trials)")
        written.append(_save(figure, folder / f"{_slug(stem)}_losses.png"))
    return written


def _save(figure: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


# ---------------------------------------------------------------------------------------------------

FORMATS = {"md": ("md",), "csv": ("csv",), "json": ("json",), "both": ("md", "csv"), "all": ("md", "csv", "json")}


def summarize(save_folder: Path, out: Path | None = None, formats: str = "both",
              make_plots: bool = False) -> tuple[str, list[Path]]:
    """Scan ``save_folder``, write the requested files into ``out``; return (markdown, files written).
    ``formats``: md (summary.md), csv (summary.csv, reproduction.csv), json (summary.json), both (md and
    csv) or all."""
    save_folder = Path(save_folder)
    if not save_folder.is_dir():
        raise UserError(f"The save folder '{save_folder}' does not exist. Pass the --save_folder of your runs "
                        "(default ./save).")
    notices: list[str] = []
    groups = group_runs(scan(save_folder, notices))
    for line in notices:
        print(f"summary: {line}", file=sys.stderr)
    if not groups:
        unread = f" {len(notices)} could not be read: {' '.join(notices)}" if notices else ""
        raise UserError(f"No runs found under '{save_folder}' (looked in student/student_model/, models/ "
                        f"and transfer/ for folders with metrics.csv or checkpoints).{unread}")
    out = Path(out) if out is not None else save_folder
    out.mkdir(parents=True, exist_ok=True)
    compared = reproduction.comparisons(groups)
    text = markdown(groups, save_folder, compared, notices)
    written = []
    if "md" in FORMATS[formats]:
        (out / "summary.md").write_text(text + "\n")
        written.append(out / "summary.md")
    if "csv" in FORMATS[formats]:
        written.append(_write_csv(out / "summary.csv", CSV_COLUMNS, csv_rows(groups)))
        written.append(_write_csv(out / "reproduction.csv", reproduction.COLUMNS,
                                  [reproduction.csv_record(row) for row in compared]))
    if "json" in FORMATS[formats]:
        document = {"groups": csv_rows(groups), "reproduction": [reproduction.as_record(row) for row in compared],
                    "notices": notices}
        (out / "summary.json").write_text(json.dumps(document, indent=1) + "\n")
        written.append(out / "summary.json")
    if make_plots:
        written += plot(groups, out / "plots") + reproduction.heat_maps(compared, out / "plots")
    return text, written


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


@report_user_errors
def main(argv: list[str] | None = None) -> None:
    """``python -m reporting.summary [save_folder] [--out DIR] [--format md|csv|json|both|all] [--plot]``."""
    parser = argparse.ArgumentParser(prog="python -m reporting.summary",
                                     description="Mean ± std over trials of every run under a save folder, and "
                                                 "how they compare with the published numbers.")
    parser.add_argument("save_folder", nargs="?", default="./save", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="where the files go (default: the save folder)")
    parser.add_argument("--format", choices=list(FORMATS), default="both",
                        help="md: summary.md; csv: summary.csv and reproduction.csv; json: summary.json (both "
                             "tables); both: md and csv; all: md, csv and json")
    parser.add_argument("--plot", action="store_true",
                        help="also write PNG curves and the reproduction heat maps into <out>/plots/")
    args = parser.parse_args(argv)
    text, written = summarize(args.save_folder, args.out, args.format, args.plot)
    print(text)
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
