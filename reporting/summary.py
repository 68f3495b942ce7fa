"""Summarise the runs under a save folder: mean ± std over trials, the paper-layout table, curves.

    python -m reporting.summary save/ [--out DIR] [--format md|csv|both] [--plot]

Scans ``student/student_model/*`` (distillation), ``models/*`` (teachers and students trained from
scratch) and ``transfer/**`` (linear transfer), reading each run's ``metrics.csv`` and the saved
options of its last checkpoint (or, without a checkpoint, the run folder's name). Runs that differ
only in ``--trial`` are pooled. Writes ``summary.md`` / ``summary.csv`` (and ``plots/*.png`` with
``--plot``) into ``--out`` (default: the save folder) and prints the markdown.

"best" is the best test top-1 during training (what the CRD/DCD/RRD papers report, averaged over
trials); "last" is the final epoch's. Standard deviations are sample std (n-1).
"""
from __future__ import annotations

import argparse
import csv
import math
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from distiller_zoo import METHODS
from helper.errors import UserError, report_user_errors

PAPER_PAIRS = [("wrn_40_2", "wrn_16_2"), ("wrn_40_2", "wrn_40_1"), ("resnet56", "resnet20"),
               ("resnet110", "resnet20"), ("resnet110", "resnet32"), ("resnet32x4", "resnet8x4"), ("vgg13", "vgg8"),
               ("vgg13", "MobileNetV2"), ("ResNet50", "MobileNetV2"), ("ResNet50", "vgg8"),
               ("resnet32x4", "ShuffleV1"), ("resnet32x4", "ShuffleV2"), ("wrn_40_2", "ShuffleV1")]
KINDS = ("student", "vanilla", "transfer")
FIXED_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "test_acc1", "test_acc5", "test_loss", "best_acc",
                 "epoch_seconds")
STUDENT_FOLDER = re.compile(r"^(?P<distill>[A-Za-z0-9]+)_(?P<dataset>[A-Za-z0-9]+)_S_(?P<model_s>.+?)_T_(?P<model_t>.+)"
                            r"_r_(?P<gamma>[^_]+)_a_(?P<alpha>[^_]+)_b_(?P<beta>[^_]+)_trial_(?P<trial>.+)$")
TEACHER_FOLDER = re.compile(r"^(?P<stem>.+?)_vanilla(?:_trial_(?P<trial>.+))?$")
TRANSFER_FOLDER = re.compile(r"^transfer_(?P<dataset>[A-Za-z0-9]+)_S_(?P<model_s>.+?)_from_(?P<source>.+)"
                             r"_trial_(?P<trial>[^_]+)$")


@dataclass
class Run:
    """One run folder: what was trained, how far, and its per-epoch metrics."""

    kind: str                       # 'student' | 'vanilla' | 'transfer'
    path: Path
    dataset: str
    teacher: str                    # teacher arch ('-' for vanilla runs; the source's teacher for transfer)
    student: str                    # the trained (or transferred) model's arch
    method: str                     # --distill key, 'vanilla', or the transferred student's key
    gamma: float | None = None
    alpha: float | None = None
    beta: float | None = None
    trial: str = "0"
    epochs_done: int = 0
    epochs_planned: int | None = None
    best_acc: float | None = None
    last_acc: float | None = None
    teacher_acc: float | None = None
    incomplete_checkpoint: bool = False    # saved mid-epoch or in an init stage
    rows: list[dict[str, float]] = field(default_factory=list)

    @property
    def unfinished(self) -> bool:
        planned_short = self.epochs_planned is not None and self.epochs_done < self.epochs_planned
        return planned_short or self.incomplete_checkpoint

    @property
    def label(self) -> str:
        return method_label(self.method, self.alpha)


@dataclass
class Group:
    """Runs that differ only in their trial."""

    runs: list[Run]

    @property
    def first(self) -> Run:
        return self.runs[0]

    def _values(self, name: str) -> list[float]:
        return [value for run in self.runs if (value := getattr(run, name)) is not None]

    def mean_std(self, name: str) -> tuple[float | None, float | None]:
        """Mean and sample std (None for fewer than two values) of a per-run number."""
        values = self._values(name)
        if not values:
            return None, None
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None

    @property
    def epochs_done(self) -> int:
        return min(run.epochs_done for run in self.runs)

    @property
    def epochs_planned(self) -> int | None:
        planned = [run.epochs_planned for run in self.runs if run.epochs_planned is not None]
        return max(planned) if planned else None

    @property
    def unfinished(self) -> bool:
        return any(run.unfinished for run in self.runs)

    @property
    def column(self) -> str:
        """The pivot-table column: the method label, with the weights when they are not the papers'."""
        run = self.first
        if run.kind == "vanilla" or is_canonical(run.method, run.gamma, run.alpha, run.beta):
            return run.label
        return f"{run.label} (r={_g(run.gamma)},a={_g(run.alpha)},b={_g(run.beta)})"


# ---------------------------------------------------------------------------------------------------
# reading run folders

def read_state(path: Path) -> Any:
    """Load a checkpoint memory-mapped with ``weights_only=True`` (fast: tensors are not read)."""
    import torch

    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (pre-zip) files cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True)


def read_metrics(path: Path) -> list[dict[str, float]]:
    """Rows of a metrics.csv as floats (empty cells dropped); [] when the file is missing."""
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            parsed = {}
            for key, value in row.items():
                try:
                    parsed[key] = float(value)
                except (TypeError, ValueError):
                    continue
            if "epoch" in parsed:
                rows.append(parsed)
    return rows


def _checkpoint_file(run_dir: Path) -> Path | None:
    for pattern in ("*_last.pth", "*_best.pth"):
        found = sorted(run_dir.glob(pattern))
        if found:
            return found[0]
    numbered = [(int(m.group(1)), p) for p in run_dir.glob("ckpt_epoch_*.pth")
                if (m := re.fullmatch(r"ckpt_epoch_(\d+)\.pth", p.name))]
    return max(numbered)[1] if numbered else None


def _number(value: Any) -> float | None:
    try:
        number = float(value)  # also 0-d tensors (RepDistiller saved accuracies as tensors)
    except (TypeError, ValueError, RuntimeError):
        return None
    return number if math.isfinite(number) else None


def _split_model(stem: str) -> tuple[str, str]:
    """'resnet32x4' -> ('resnet32x4', 'cifar100'); 'resnet20_digits' -> ('resnet20', 'digits')."""
    from models import model_dict

    if stem in model_dict:
        return stem, "cifar100"
    matches = [name for name in model_dict if stem.startswith(name + "_")]
    if not matches:
        return stem, "cifar100"
    model = max(matches, key=len)
    return model, stem[len(model) + 1:]


def _from_folder_name(kind: str, name: str) -> dict[str, Any]:
    """What a run folder's name says (the fallback when it holds no readable checkpoint)."""
    if kind == "student" and (match := STUDENT_FOLDER.match(name)):
        info: dict[str, Any] = {"distill": match["distill"], "dataset": match["dataset"], "model_s": match["model_s"],
                                "model_t": match["model_t"], "trial": match["trial"]}
        info.update({key: _number(match[key]) for key in ("gamma", "alpha", "beta")})
        return info
    if kind == "vanilla" and (match := TEACHER_FOLDER.match(name)):
        model, dataset = _split_model(match["stem"])
        return {"model": model, "dataset": dataset, "trial": match["trial"] or "0"}
    if kind == "transfer" and (match := TRANSFER_FOLDER.match(name)):
        return {"dataset": match["dataset"], "model_s": match["model_s"], "trial": match["trial"],
                "source": match["source"]}
    return {}


def _source_of(path_s: Any) -> dict[str, Any]:
    """Teacher, method and weights of a transferred student, from its run folder's name."""
    if not path_s:
        return {}
    return _from_folder_name("student", Path(str(path_s)).parent.name)


def read_run(run_dir: Path, kind: str) -> Run | None:
    """Read one run folder; None when it holds neither metrics nor a checkpoint."""
    rows = read_metrics(run_dir / "metrics.csv")
    checkpoint_path = _checkpoint_file(run_dir)
    if not rows and checkpoint_path is None:
        return None
    state: dict[str, Any] = {}
    if checkpoint_path is not None:
        try:
            loaded = read_state(checkpoint_path)
            state = loaded if isinstance(loaded, dict) else {}
        except Exception as error:  # one unreadable file must not hide the other runs
            print(f"summary: warning: cannot read '{checkpoint_path}' ({type(error).__name__}); using the folder "
                  "name and metrics.csv instead.", file=sys.stderr)
    opt = state.get("opt") or {}
    opt = vars(opt) if isinstance(opt, argparse.Namespace) else dict(opt)
    named = _from_folder_name(kind, run_dir.name)

    def pick(key: str, default: Any = None) -> Any:
        value = opt.get(key)
        return value if value is not None else named.get(key, default)

    if kind == "student":
        teacher, student = pick("model_t", state.get("model_t", "?")), pick("model_s", "?")
        method = pick("distill", "?")
        weights = [_number(pick(key)) for key in ("gamma", "alpha", "beta")]
    elif kind == "vanilla":  # trained here, or a published checkpoint (no options, no metrics)
        published = bool(state) and not rows and "opt" not in state
        teacher, student = "-", pick("model", state.get("arch", "?"))
        method = "published" if published else "vanilla"
        weights = [None, None, None]
    else:
        source = _source_of(opt.get("path_s")) or _from_folder_name("student", named.get("source", ""))
        teacher, student = source.get("model_t", "?"), pick("model_s", source.get("model_s", "?"))
        method = source.get("distill", "?")
        weights = [source.get(key) for key in ("gamma", "alpha", "beta")]

    stage_main = state.get("stage", "main") == "main"
    if state and "epoch" in state:
        epochs_done = int(state["epoch"]) if stage_main else 0
    else:
        epochs_done = int(rows[-1]["epoch"]) if rows else 0
    planned = opt.get("epochs")
    if planned is None and state and not rows and "opt" not in state:
        planned = epochs_done  # a published checkpoint (no options, no metrics): take it as complete
    accuracies = [row["test_acc1"] for row in rows if "test_acc1" in row]
    if accuracies:
        best_acc, last_acc = max(accuracies), accuracies[-1]
    else:
        last_acc = _number(state.get("accuracy"))
        best_acc = _number(state.get("best_acc", state.get("accuracy")))
    return Run(kind=kind, path=run_dir, dataset=str(pick("dataset", "?")), teacher=str(teacher),
               student=str(student), method=str(method), gamma=weights[0], alpha=weights[1], beta=weights[2],
               trial=str(pick("trial", "0")), epochs_done=epochs_done,
               epochs_planned=int(planned) if planned is not None else None, best_acc=best_acc, last_acc=last_acc,
               teacher_acc=_number(state.get("teacher_acc")),
               incomplete_checkpoint=bool(state) and (not stage_main or bool(state.get("partial"))), rows=rows)


def scan(save_folder: Path) -> list[Run]:
    """Every run under ``save_folder`` (student/student_model/*, models/*, transfer/**)."""
    folders: list[tuple[Path, str]] = []
    for parent, kind in ((save_folder / "student" / "student_model", "student"), (save_folder / "models", "vanilla")):
        if parent.is_dir():
            folders += [(child, kind) for child in sorted(parent.iterdir()) if child.is_dir()]
    transfer = save_folder / "transfer"
    if transfer.is_dir():
        candidates = {path.parent for pattern in ("metrics.csv", "*_last.pth") for path in transfer.rglob(pattern)}
        folders += [(folder, "transfer") for folder in sorted(candidates)]
    runs = [read_run(folder, kind) for folder, kind in folders]
    return [run for run in runs if run is not None]


# ---------------------------------------------------------------------------------------------------
# grouping and labels

def method_label(method: str, alpha: float | None) -> str:
    """The papers' name of a --distill key ('crd' -> 'CRD'; with a KD term (-a > 0) 'CRD+KD');
    'vanilla', 'published' and unknown keys stay as they are."""
    return METHODS[method].label(alpha or 0.0) if method in METHODS else method


def paper_columns() -> list[str]:
    """The method columns of the paper-layout table, in the registry's order (KEY+KD after KEY
    for the methods swept with a KD term too)."""
    columns = []
    for method in METHODS.values():
        columns.append(method.label())
        if method.sweep_with_kd:
            columns.append(method.label(alpha=1.0))
    return columns


def is_canonical(method: str, gamma: float | None, alpha: float | None, beta: float | None) -> bool:
    """The weights of the paper tables: the method's defaults (kd: -r 0.1 -a 0.9 -b 0), or, for a
    method without a KD term, the same plus -a 1 (the +KD rows)."""
    if method not in METHODS:
        return False
    cls = METHODS[method]
    if (gamma, beta) != (cls.default_gamma, cls.default_beta):
        return False
    return alpha == cls.default_alpha or (cls.default_alpha == 0 and alpha == 1.0)


def group_runs(runs: Iterable[Run]) -> list[Group]:
    """Pool runs that differ only in the trial; sorted as the paper tables are."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        key = (run.kind, run.dataset, run.teacher, run.student, run.method, run.gamma, run.alpha, run.beta)
        groups.setdefault(key, []).append(run)
    result = [Group(sorted(members, key=lambda r: _natural(r.trial))) for members in groups.values()]
    return sorted(result, key=_group_order)


def _natural(text: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def _pair_order(teacher: str, student: str) -> tuple:
    pair = (teacher, student)
    return (PAPER_PAIRS.index(pair), "", "") if pair in PAPER_PAIRS else (len(PAPER_PAIRS), teacher, student)


def _column_order(column: str) -> tuple:
    columns = paper_columns()
    return (columns.index(column), column) if column in columns else (len(columns), column)


def _group_order(group: Group) -> tuple:
    run = group.first
    return (KINDS.index(run.kind) if run.kind in KINDS else len(KINDS), run.dataset,
            _pair_order(run.teacher, run.student), _column_order(group.column))


# ---------------------------------------------------------------------------------------------------
# tables

def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _g_or_empty(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _epochs(group: Group) -> str:
    planned = group.epochs_planned
    return f"{group.epochs_done}/{planned if planned is not None else '?'}" + ("*" if group.unfinished else "")


CSV_COLUMNS = ["kind", "dataset", "teacher", "student", "method", "distill", "gamma", "alpha", "beta", "trials",
               "trial_ids", "best_acc_mean", "best_acc_std", "last_acc_mean", "last_acc_std", "epochs_done",
               "epochs_planned", "unfinished", "teacher_acc"]


def _four(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def csv_rows(groups: list[Group]) -> list[dict[str, Any]]:
    """One row per group (std empty for a single trial; accuracies with 4 decimals)."""
    rows = []
    for group in groups:
        run = group.first
        best, best_std = group.mean_std("best_acc")
        last, last_std = group.mean_std("last_acc")
        teacher_acc, _ = group.mean_std("teacher_acc")
        rows.append({"kind": run.kind, "dataset": run.dataset, "teacher": run.teacher, "student": run.student,
                     "method": group.column, "distill": run.method, "gamma": _g_or_empty(run.gamma),
                     "alpha": _g_or_empty(run.alpha), "beta": _g_or_empty(run.beta),
                     "trials": len(group.runs), "trial_ids": " ".join(r.trial for r in group.runs),
                     "best_acc_mean": _four(best), "best_acc_std": _four(best_std), "last_acc_mean": _four(last),
                     "last_acc_std": _four(last_std), "epochs_done": group.epochs_done,
                     "epochs_planned": "" if group.epochs_planned is None else group.epochs_planned,
                     "unfinished": int(group.unfinished), "teacher_acc": _four(teacher_acc)})
    return rows


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def pivot(groups: list[Group], dataset: str) -> tuple[list[str], list[list[str]]]:
    """Paper layout for ``dataset``: rows teacher -> student, columns T, S and the methods (mean best acc)."""
    students = [g for g in groups if g.first.kind == "student" and g.first.dataset == dataset]
    own = [g for g in groups if g.first.kind == "vanilla" and g.first.dataset == dataset]
    vanilla = {g.first.student: g for g in own if g.first.method == "vanilla"}
    published = {g.first.student: g for g in own if g.first.method == "published"}
    columns = sorted({g.column for g in students}, key=_column_order)
    pairs = sorted({(g.first.teacher, g.first.student) for g in students}, key=lambda p: _pair_order(*p))
    rows = []
    for teacher, student in pairs:
        in_pair = [g for g in students if (g.first.teacher, g.first.student) == (teacher, student)]
        teacher_accs = [r.teacher_acc for g in in_pair for r in g.runs if r.teacher_acc is not None]
        teacher_cell = _fmt(statistics.fmean(teacher_accs)) if teacher_accs else \
            _accuracy_cell(vanilla.get(teacher, published.get(teacher)))
        cells = [f"{teacher} -> {student}", teacher_cell, _accuracy_cell(vanilla.get(student))]
        by_column = {g.column: g for g in in_pair}
        for column in columns:
            cells.append(_accuracy_cell(by_column.get(column)))
        rows.append(cells)
    return ["teacher -> student", "T", "S", *columns], rows


def _accuracy_cell(group: Group | None) -> str:
    if group is None:
        return "-"
    return _fmt(group.mean_std("best_acc")[0]) + ("*" if group.unfinished else "")


def markdown(groups: list[Group], save_folder: Path) -> str:
    """The whole summary.md: the pivot table per dataset, then every group per kind."""
    lines = [f"# Results summary: `{save_folder}`", "",
             "Top-1 test accuracy (%), mean ± sample std (n-1) over trials ('-' for one trial). **best** is the "
             "best test accuracy during training (what the CRD/DCD/RRD papers report, averaged over trials); "
             "**last** is the final epoch's. *epochs* is completed/planned; `*` marks a group with an unfinished "
             "run.", ""]
    datasets = sorted({g.first.dataset for g in groups if g.first.kind == "student"})
    for dataset in datasets:
        header, rows = pivot(groups, dataset)
        lines += [f"## {dataset}: best test accuracy, teacher -> student (mean over trials)", "",
                  "T: the teacher's test accuracy; S: the student trained from scratch (vanilla runs).", ""]
        lines += _markdown_table(header, rows) + [""]
    titles = {"student": "Distillation runs", "vanilla": "Vanilla runs (teachers and students trained from scratch)",
              "transfer": "Transfer runs (linear probe on the frozen distilled student)"}
    for kind in KINDS:
        members = [g for g in groups if g.first.kind == kind]
        if not members:
            continue
        header = ["dataset", "teacher", "student", "method", "r", "a", "b", "trials", "best", "best std", "last",
                  "last std", "epochs"]
        if kind == "vanilla":
            header = ["dataset", "model", "source", "trials", "best", "best std", "last", "last std", "epochs"]
        rows = []
        for group in members:
            run = group.first
            best, best_std = group.mean_std("best_acc")
            last, last_std = group.mean_std("last_acc")
            numbers = [str(len(group.runs)), _fmt(best), _fmt(best_std), _fmt(last), _fmt(last_std), _epochs(group)]
            if kind == "vanilla":
                source = "published checkpoint" if run.method == "published" else "trained"
                rows.append([run.dataset, run.student, source, *numbers])
            else:
                rows.append([run.dataset, run.teacher, run.student, run.label, _g(run.gamma), _g(run.alpha),
                             _g(run.beta), *numbers])
        lines += [f"## {titles[kind]}", ""] + _markdown_table(header, rows) + [""]
    return "\n".join(lines)


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

def summarize(save_folder: Path, out: Path | None = None, formats: str = "both",
              make_plots: bool = False) -> tuple[str, list[Path]]:
    """Scan ``save_folder``, write the requested files into ``out``; return (markdown, files written)."""
    save_folder = Path(save_folder)
    if not save_folder.is_dir():
        raise UserError(f"The save folder '{save_folder}' does not exist. Pass the --save_folder of your runs "
                        "(default ./save).")
    groups = group_runs(scan(save_folder))
    if not groups:
        raise UserError(f"No runs found under '{save_folder}' (looked in student/student_model/, models/ and "
                        "transfer/ for folders with metrics.csv or checkpoints).")
    out = Path(out) if out is not None else save_folder
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(groups, save_folder)
    written = []
    if formats in ("md", "both"):
        (out / "summary.md").write_text(text + "\n")
        written.append(out / "summary.md")
    if formats in ("csv", "both"):
        with open(out / "summary.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(csv_rows(groups))
        written.append(out / "summary.csv")
    if make_plots:
        written += plot(groups, out / "plots")
    return text, written


@report_user_errors
def main(argv: list[str] | None = None) -> None:
    """``python -m reporting.summary [save_folder] [--out DIR] [--format md|csv|both] [--plot]``."""
    parser = argparse.ArgumentParser(prog="python -m reporting.summary",
                                     description="Mean ± std over trials of every run under a save folder.")
    parser.add_argument("save_folder", nargs="?", default="./save", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="where summary.md/.csv go (default: the save folder)")
    parser.add_argument("--format", choices=["md", "csv", "both"], default="both")
    parser.add_argument("--plot", action="store_true", help="also write PNG curves into <out>/plots/")
    args = parser.parse_args(argv)
    text, written = summarize(args.save_folder, args.out, args.format, args.plot)
    print(text)
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
