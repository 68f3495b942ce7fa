"""Our CIFAR-100 numbers beside the published ones: difference, 95% interval, verdict, protocol check.

Published student accuracies come from each method file's ``published`` dict ("teacher->student", and
"teacher->student+KD" for the run with a KD term); published teacher accuracies are those of the CRD
paper (Tian et al., ICLR 2020, Table 1), whose teacher checkpoints ``scripts/fetch_pretrained_teachers.sh``
fetches. A teacher is the published one only when its content says so (``teacher_note``). The interval
is Student's t interval for the mean of our trials' best accuracies.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distiller_zoo import METHODS
from distiller_zoo.base import PRESETS, split_method_name
from helper.options import SMALL_LR_ARCHS
from helper.published_teachers import FETCH_SCRIPT, RECORD_FILE, conflicts_with_table, published_by_digest
from reporting.run_settings import SHORT_DIGEST, teacher_cell
from reporting.runs import Group, Run, is_canonical, plain_number

PUBLISHED_DATASET = "cifar100"
PUBLISHED_TEACHERS = {"resnet32x4": 79.42, "wrn_40_2": 75.61, "resnet56": 72.34, "resnet110": 74.31,
                      "vgg13": 74.64, "ResNet50": 79.34}
PROTOCOL_EPOCHS, PROTOCOL_BATCH_SIZE = 240, 64
CONFIDENCE = 0.95
SPREAD_MIN_TRIALS = 3
TEACHER_METHODS = ("teacher (used)", "teacher (trained here)")  # the method cell of the teacher rows


@dataclass
class Comparison:
    """One row of the reproduction table: one group of our runs (or one teacher) against a published number."""

    dataset: str
    pair: str                       # 'resnet32x4 3f2a9c0d -> resnet8x4' (teacher digest), the teacher alone for a teacher row
    method: str                     # the summary's column name, 'teacher' for a teacher row
    published: float
    best: list[float]               # our runs' best test accuracies (one per trial)
    last: list[float]
    protocol: list[str] = field(default_factory=list)   # how the runs differ from the published protocol

    @property
    def n(self) -> int:
        return len(self.best)

    @property
    def interval(self) -> tuple[float, float] | None:
        return t_interval(self.best)

    @property
    def verdict(self) -> str:
        return verdict(self.published, self.interval)

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


def published_student(run: Run) -> float | None:
    """The authors' CIFAR-100 number for this run's method, pair and KD variant; None where there is none."""
    split = split_method_name(run.method)
    if split is None or run.dataset != PUBLISHED_DATASET:
        return None
    method = METHODS[split[0]]
    with_kd = method.default_alpha == 0 and (run.alpha or 0) > 0
    if run.method in PRESETS:
        published = PRESETS[run.method].published
    else:
        published = method.published if split[1] == "sgd" else {}
    return published.get(f"{run.teacher}->{run.student}" + ("+KD" if with_kd else ""))


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
    """How a run's epochs, batch size and learning rate differ from the published protocol (240, 64, 0.05;
    lr 0.01 for MobileNetV2 and ShuffleNet students)."""
    expected = {"epochs": PROTOCOL_EPOCHS, "batch_size": PROTOCOL_BATCH_SIZE,
                "learning_rate": 0.01 if run.student in SMALL_LR_ARCHS else 0.05}
    return [f"{name} {plain_number(run.settings[name])} (published {plain_number(value)})"
            for name, value in expected.items() if name in run.settings and run.settings[name] != value]


def protocol_differences(run: Run) -> list[str]:
    """How a distillation run's settings differ from the published protocol: the schedule, the method's
    default weights, no --logit_stand, the published teacher."""
    note = teacher_note(run)
    teacher = [note] if note else []
    if not run.settings:
        return ["settings unknown (no checkpoint)", *teacher]
    found = schedule_differences(run)
    if not is_canonical(run.method, run.gamma, run.alpha, run.beta):
        found.append(f"weights -r {plain_number(run.gamma)} -a {plain_number(run.alpha)} -b {plain_number(run.beta)} "
                     "(not the method's defaults)")
    if run.settings.get("logit_stand"):
        found.append("--logit_stand")
    return found + teacher


def student_comparisons(groups: list[Group]) -> list[Comparison]:
    """A row for every averaged distillation group that has a published number."""
    rows = []
    for group in groups:
        run = group.first
        published = published_student(run) if run.kind == "student" and not group.apart else None
        if published is None:
            continue
        pair = f"{teacher_cell(run.teacher, run.teacher_digest, None)} -> {run.student}"
        rows.append(Comparison(run.dataset, pair, group.column, published,
                               group.values("best_acc"), group.values("last_acc"), protocol_differences(run)))
    return rows


def teacher_comparisons(groups: list[Group]) -> list[Comparison]:
    """The teachers the distillation runs used, and the teachers trained here from scratch, against the
    published teacher accuracies."""
    rows, seen = [], set()
    for group in groups:
        run = group.first
        if run.dataset != PUBLISHED_DATASET or group.apart:
            continue
        if run.kind == "student" and run.teacher in PUBLISHED_TEACHERS and run.teacher_acc is not None:
            key = (run.teacher, run.teacher_digest or round(run.teacher_acc, 2))
            if key not in seen:
                seen.add(key)
                name = teacher_cell(run.teacher, run.teacher_digest, None)
                note = teacher_note(run)
                rows.append(Comparison(run.dataset, name, "teacher (used)", PUBLISHED_TEACHERS[run.teacher],
                                       [run.teacher_acc], [], [note] if note else []))
        elif run.kind == "vanilla" and run.method == "vanilla" and run.student in PUBLISHED_TEACHERS:
            rows.append(Comparison(run.dataset, run.student, "teacher (trained here)",
                                   PUBLISHED_TEACHERS[run.student], group.values("best_acc"),
                                   group.values("last_acc"), schedule_differences(run)))
    return rows


def comparisons(groups: list[Group]) -> list[Comparison]:
    """The reproduction table of ``groups`` (sorted as the summary sorts them): teachers first, then students."""
    return teacher_comparisons(groups) + student_comparisons(groups)


# ---------------------------------------------------------------------------------------------------
# output

COLUMNS = ["dataset", "pair", "method", "published", "n", "best_mean", "best_std", "best_min", "best_max",
           "last_mean", "last_std", "difference", "interval_low", "interval_high", "verdict", "protocol"]
EXPLANATION = (
    "Published: the authors' CIFAR-100 top-1 (%) (teachers: the CRD paper's). Ours: mean ± sample std of the "
    "best test accuracy over n trials, and of the last epoch's. 95% interval: Student's t interval for the mean "
    "of our trials (n-1 degrees of freedom); with 3 trials it is about ±2.5 std wide, so only large gaps "
    "show. Verdict: *consistent* when the published value lies in the interval, *ours lower* / *ours higher* "
    "when it lies above / below the whole interval, *n too small* for one trial. Published numbers are "
    "themselves means (or medians) of a few runs, with their own spread. Where our runs' settings differ "
    "from the published protocol (240 epochs, batch 64, lr 0.05 or 0.01 for MobileNetV2/ShuffleNet "
    "students, the method's default weights, no --logit_stand, the published teacher) the last column says "
    "how, and the numbers are not the paper's experiment. min-max is shown for 3 or more trials.")


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
            "protocol": "; ".join(row.protocol)}


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
    verdict_cell = row.verdict + (" (settings differ)" if row.protocol else "")
    return [row.dataset, row.pair, row.method, f"{row.published:.2f}",
            f"{_mean_std_cell(values['best_mean'], values['best_std'])} ({row.n})", spread,
            _mean_std_cell(values["last_mean"], values["last_std"]), difference, interval, verdict_cell,
            "; ".join(row.protocol) or "as published"]


MARKDOWN_HEADER = ["dataset", "teacher -> student", "method", "published", "ours best (n)", "min-max", "ours last",
                   "ours - published", "95% interval", "verdict", "differs from the published protocol"]


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

