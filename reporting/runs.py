"""The runs under a save folder, read and grouped: what each was trained with, how far, its metrics.

Scans ``student/student_model/*`` (distillation), ``models/*`` (teachers and students trained from
scratch) and ``transfer/**`` (linear transfer), reading each run's ``metrics.csv``, its run record
(``run.json``) and its last checkpoint (or, without a checkpoint, the run folder's name). Finished runs
that differ only in ``--trial`` (and the seed) and were trained with the same settings and teacher are
pooled into a group; the others are kept apart.
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

from distiller_zoo import METHODS, table_names
from distiller_zoo.base import run_method_name, split_method_name
from distiller_zoo.base import method_label as registry_label
from helper.run_folder import (KIND_FOLDERS, LAST_SUFFIX, Stage, best_checkpoints, checkpoint_stage,
                               epoch_checkpoints, is_last_checkpoint, last_checkpoints, metrics_file,
                               parse_folder_name)
from reporting.run_settings import (describe_differences, describe_settings, distinguishing_settings,
                                    identity_settings, read_run_record, same_settings, settings_differences,
                                    settings_from_options, teacher_cell, with_data_digest)

PAPER_PAIRS = [("wrn_40_2", "wrn_16_2"), ("wrn_40_2", "wrn_40_1"), ("resnet56", "resnet20"),
               ("resnet110", "resnet20"), ("resnet110", "resnet32"), ("resnet32x4", "resnet8x4"), ("vgg13", "vgg8"),
               ("vgg13", "MobileNetV2"), ("ResNet50", "MobileNetV2"), ("ResNet50", "vgg8"),
               ("resnet32x4", "ShuffleV1"), ("resnet32x4", "ShuffleV2"), ("wrn_40_2", "ShuffleV1")]
KINDS = ("student", "vanilla", "transfer")


@dataclass
class Run:
    """One run folder: what was trained, with what, how far, and its per-epoch metrics."""

    kind: str                       # 'student' | 'vanilla' | 'transfer'
    path: Path
    dataset: str
    teacher: str                    # teacher arch ('-' for vanilla runs; the source's teacher for transfer)
    student: str                    # the trained (or transferred) model's arch
    method: str                     # --distill key ('crd_dot', 'dot': with --optimizer dot), 'vanilla', or the
                                    # transferred student's
    gamma: float | None = None
    alpha: float | None = None
    beta: float | None = None
    trial: str = "0"
    epochs_done: int = 0
    epochs_planned: int | None = None
    best_acc: float | None = None
    last_acc: float | None = None
    teacher_acc: float | None = None       # measured at the start of training, else the teacher file's own
    incomplete_checkpoint: bool = False    # saved mid-epoch or in an init stage
    rows: list[dict[str, float]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)  # recorded settings (or the saved training options)
    recorded: bool = False                 # the settings come from the run record (run.json)
    teacher_digest: str | None = None      # content digest of the teacher (transfer: the source student) file
    teacher_path: str | None = None
    teacher_dataset: str | None = None     # the dataset the teacher file records (None: it records none)
    settings_changed: list[tuple[str, Any, Any]] = field(default_factory=list)  # run.json vs its last checkpoint
    weights_digest: str | None = None      # a checkpoint without options (method 'published'): its weights digest
    recipe: dict[str, Any] | None = None   # the run record's recipe entry (train_student.py --recipe)

    @property
    def unfinished(self) -> bool:
        planned_short = self.epochs_planned is not None and self.epochs_done < self.epochs_planned
        return planned_short or self.incomplete_checkpoint

    @property
    def label(self) -> str:
        return method_label(self.method, self.alpha)

    @property
    def identity(self) -> dict[str, Any]:
        """The settings the trials of one experiment share (all but seed and trial)."""
        return identity_settings(self.settings)

    @property
    def teacher_identity(self) -> str | None:
        """The teacher actually used: its digest, or for runs without a record its measured accuracy."""
        if self.teacher_digest:
            return self.teacher_digest
        return None if self.teacher_acc is None else f"accuracy {self.teacher_acc:.2f}"

    @property
    def apart_reason(self) -> str:
        """Why this run is not averaged with others ('' when it is): unfinished, or resumed with other settings."""
        if self.settings_changed:
            return f"resumed with different settings ({describe_differences(self.settings_changed)})"
        if self.incomplete_checkpoint:
            return "unfinished (saved mid-epoch or in the init stage)"
        if self.unfinished:
            return f"unfinished ({self.epochs_done}/{self.epochs_planned} epochs)"
        return ""


@dataclass
class Group:
    """Runs that differ only in their trial (and seed): same folder name apart from the trial, same
    recorded settings, same teacher. A run listed apart (unfinished, resumed with other settings) is a
    group of its own with ``apart`` set."""

    runs: list[Run]
    distinct: str = ""      # the settings that tell this group from others of the same name ('epochs=3, kd_T=2')
    apart: str = ""         # why its run is not averaged with the others ('' for an averaged group)

    @property
    def first(self) -> Run:
        return self.runs[0]

    def values(self, name: str) -> list[float]:
        """A per-run number (best_acc, last_acc, teacher_acc) of every run that has it."""
        return [value for run in self.runs if (value := getattr(run, name)) is not None]

    def mean_std(self, name: str) -> tuple[float | None, float | None]:
        """Mean and sample std (None for fewer than two values) of a per-run number."""
        values = self.values(name)
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
    def weights_column(self) -> str:
        """The method label, with the weights when they are not the papers'."""
        run = self.first
        if run.kind == "vanilla" or is_canonical(run.method, run.gamma, run.alpha, run.beta):
            return run.label
        return f"{run.label} (r={plain_number(run.gamma)},a={plain_number(run.alpha)},b={plain_number(run.beta)})"

    @property
    def column(self) -> str:
        """The pivot-table column: ``weights_column`` plus the settings that tell this group from others
        of the same folder name ('KD (epochs=3, kd_T=2)')."""
        if not self.distinct:
            return self.weights_column
        if self.weights_column.endswith(")"):
            return f"{self.weights_column[:-1]}; {self.distinct})"
        return f"{self.weights_column} ({self.distinct})"

    @property
    def teacher_cell(self) -> str:
        """The teacher actually used: arch, short digest, accuracy."""
        run = self.first
        accuracy = self.mean_std("teacher_acc")[0]
        return run.teacher if run.kind == "vanilla" else teacher_cell(run.teacher, run.teacher_digest, accuracy)


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


def read_metrics(path: Path, problems: list[str] | None = None) -> list[dict[str, float]]:
    """Rows of a metrics.csv as floats (empty cells dropped; a test accuracy that is not a number kept as
    NaN), one per epoch in order; [] when the file is missing. What is wrong with the file (not UTF-8
    text, empty, no 'epoch' or 'test_acc1' column, lines cut short, accuracies that are not numbers,
    epochs repeated) is appended to ``problems``; unusable lines are left out."""
    problems = [] if problems is None else problems
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header, lines = reader.fieldnames or [], list(reader)
    except UnicodeDecodeError as error:
        problems.append(f"not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset {error.start})")
        return []
    except (OSError, csv.Error) as error:
        problems.append(f"unreadable ({type(error).__name__}: {error})")
        return []
    if not header:
        problems.append("empty")
        return []
    if "epoch" not in header:
        problems.append(f"no 'epoch' column (its header: {', '.join(header)[:80]})")
        return []
    if "test_acc1" not in header:
        problems.append("no 'test_acc1' column")
    rows, damaged = _parse_rows(lines)
    if damaged:
        problems.append(f"{_count(damaged, 'line')} cut short or not numbers (line {', '.join(map(str, damaged[:5]))}"
                        f"{', ...' if len(damaged) > 5 else ''}), left out")
    nan_epochs = [row["epoch"] for row in rows if not math.isfinite(row.get("test_acc1", 0.0))]
    if nan_epochs:
        problems.append(f"test_acc1 is not a number at epoch {', '.join(f'{e:g}' for e in nan_epochs[:5])}"
                        f"{', ...' if len(nan_epochs) > 5 else ''} (no accuracy for those epochs)")
    by_epoch = {row["epoch"]: row for row in rows}  # the last row of a repeated epoch wins
    if len(by_epoch) < len(rows) or list(by_epoch) != sorted(by_epoch):
        problems.append("epochs repeated or out of order (the last row of each epoch is used)")
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def _parse_rows(lines: list[dict[str, Any]]) -> tuple[list[dict[str, float]], list[int]]:
    """(rows of numbers, the file's line numbers of the lines that have too few or too many cells or no
    numeric epoch)."""
    rows, damaged = [], []
    for number, line in enumerate(lines, start=2):
        if None in line or None in line.values():
            damaged.append(number)
            continue
        parsed = {}
        for key, value in line.items():
            try:
                parsed[key] = float(value)
            except (TypeError, ValueError):
                continue
        if math.isfinite(parsed.get("epoch", math.nan)):
            rows.append(parsed)
        else:
            damaged.append(number)
    return rows, damaged


def _count(items: list, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _checkpoint_file(run_dir: Path) -> Path | None:
    """The run's last checkpoint, else its best, else its latest ckpt_epoch_<N>.pth."""
    for found in (last_checkpoints(run_dir), best_checkpoints(run_dir)):
        if found:
            return found[0]
    numbered = epoch_checkpoints(run_dir)
    return numbered[0][1] if numbered else None


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
    info: dict[str, Any] = parse_folder_name(kind, name)
    if kind == "student" and info:
        info.update({key: _number(info[key]) for key in ("gamma", "alpha", "beta")})
    if kind == "vanilla" and info:
        model, dataset = _split_model(info.pop("stem"))
        info.update(model=model, dataset=dataset)
    return info


def _source_of(path_s: Any) -> dict[str, Any]:
    """Teacher, method and weights of a transferred student, from its run folder's name."""
    if not path_s:
        return {}
    return _from_folder_name("student", Path(str(path_s)).parent.name)


def _load_state(checkpoint_path: Path | None, problems: list[str]) -> dict[str, Any]:
    """A checkpoint as a dict ({} when there is none, or when it cannot be read: then why is appended to
    ``problems``)."""
    if checkpoint_path is None:
        return {}
    try:
        loaded = read_state(checkpoint_path)
    except Exception as error:  # torch.load raises many types for damaged files; one must not hide the others
        problems.append(f"cannot be read ({type(error).__name__}: {_first_sentence(error)})")
        return {}
    if not isinstance(loaded, dict):
        problems.append(f"holds a {type(loaded).__name__}, not a checkpoint")
        return {}
    return loaded


def _first_sentence(error: BaseException) -> str:
    from helper.checkpoint import first_sentence

    return first_sentence(str(error), limit=160)[:160]


def _what_was_trained(kind: str, state: dict[str, Any], opt: dict[str, Any], named: dict[str, Any],
                      rows: list) -> tuple[str, str, str, list[float | None]]:
    """(teacher arch, student arch, method, [gamma, alpha, beta]) of a run, from its options or folder name."""
    def pick(key: str, default: Any = None) -> Any:
        value = opt.get(key)
        return value if value is not None else named.get(key, default)

    if kind == "student":
        weights = [_number(pick(key)) for key in ("gamma", "alpha", "beta")]
        method = run_method_name(str(pick("distill", "?")), opt.get("optimizer"))
        return str(pick("model_t", state.get("model_t", "?"))), str(pick("model_s", "?")), method, weights
    if kind == "vanilla":  # trained here, or a published checkpoint (no options, no metrics)
        published = bool(state) and not rows and "opt" not in state
        return "-", str(pick("model", state.get("arch", "?"))), "published" if published else "vanilla", [None] * 3
    source = _source_of(opt.get("path_s")) or _from_folder_name("student", named.get("source", ""))
    weights = [source.get(key) for key in ("gamma", "alpha", "beta")]
    return (str(source.get("model_t", "?")), str(pick("model_s", source.get("model_s", "?"))),
        str(source.get("distill", "?")), weights)


def _progress(state: dict[str, Any], opt: dict[str, Any], rows: list[dict[str, float]],
              from_checkpoint: bool = False) -> dict[str, Any]:
    """Epochs done and planned, best and last test accuracy (from the checkpoint when ``from_checkpoint``
    or when metrics.csv has none), whether the checkpoint is mid-epoch."""
    stage_main = checkpoint_stage(state) == Stage.MAIN
    if state and "epoch" in state:
        epochs_done = int(state["epoch"]) if stage_main else 0
    else:
        epochs_done = int(rows[-1]["epoch"]) if rows else 0
    planned = opt.get("epochs")
    if planned is None and state and not rows and "opt" not in state:
        planned = epochs_done  # a published checkpoint (no options, no metrics): take it as complete
    accuracies = [row["test_acc1"] for row in rows if "test_acc1" in row]
    if accuracies and not from_checkpoint:
        finite = [value for value in accuracies if math.isfinite(value)]
        best_acc = max(finite) if finite else None
        last_acc = accuracies[-1] if math.isfinite(accuracies[-1]) else None
    else:
        last_acc = _number(state.get("accuracy"))
        best_acc = _number(state.get("best_acc", state.get("accuracy")))
    return {"epochs_done": epochs_done, "epochs_planned": int(planned) if planned is not None else None,
            "best_acc": best_acc, "last_acc": last_acc,
            "incomplete_checkpoint": bool(state) and (not stage_main or bool(state.get("partial")))}


def _against_checkpoint(rows: list[dict[str, float]], state: dict[str, Any], checkpoint_path: Path | None,
                        problems: list[str]) -> tuple[list[dict[str, float]], bool]:
    """metrics.csv checked against the run's last checkpoint: (the rows up to its epoch, whether best and
    last must come from the checkpoint because the file stops before it)."""
    if (not rows or checkpoint_path is None or not is_last_checkpoint(checkpoint_path)
            or checkpoint_stage(state) != Stage.MAIN or _number(state.get("epoch")) is None):
        return rows, False
    saved, logged = int(state["epoch"]), int(rows[-1]["epoch"])
    if logged < saved:
        problems.append(f"ends at epoch {logged}, but the checkpoint {checkpoint_path.name} is at epoch {saved} "
                        "(cut short?); best and last come from the checkpoint")
        return rows, True
    if logged > saved:
        problems.append(f"goes on to epoch {logged}, past the checkpoint {checkpoint_path.name} (epoch {saved}); "
                        f"the rows after epoch {saved} are left out")
        return [row for row in rows if row["epoch"] <= saved], False
    return rows, False


def _provenance(run_dir: Path, state: dict[str, Any], opt: dict[str, Any], notices: list[str]) -> dict[str, Any]:
    """The run's settings and teacher from its run record, else from its checkpoint's options; and the
    settings its last checkpoint was trained with where they differ from the record's."""
    record = read_run_record(run_dir, notices)
    teacher_acc = _number(state.get("teacher_acc"))
    if record is None:
        return {"settings": settings_from_options(opt), "recorded": False, "teacher_acc": teacher_acc,
                "teacher_path": opt.get("path_t") or opt.get("path_s")}
    teacher = record.get("teacher") or {}
    settings = dict(record.get("settings") or {})
    saved = state.get("run") if isinstance(state.get("run"), dict) else None
    changed = []
    if saved is not None:
        changed = settings_differences(dict(saved.get("settings") or {}), settings)
        saved_digest = (saved.get("teacher") or {}).get("digest")
        if saved_digest != teacher.get("digest"):
            changed.append(("teacher digest", saved_digest, teacher.get("digest")))
    return {"settings": with_data_digest(settings, record), "recorded": True, "settings_changed": changed,
            "teacher_acc": teacher_acc if teacher_acc is not None else _number(teacher.get("accuracy")),
            "teacher_digest": teacher.get("digest"), "teacher_path": teacher.get("path"),
            "teacher_dataset": teacher.get("dataset"),
            "recipe": record.get("recipe") if isinstance(record.get("recipe"), dict) else None}


def read_run(run_dir: Path, kind: str, notices: list[str] | None = None) -> Run | None:
    """Read one run folder; None when it holds neither metrics nor a checkpoint, or neither can be read.
    Each file that cannot be read, or read only in part, adds one line to ``notices``."""
    notices = [] if notices is None else notices
    metrics_path, metrics_problems, state_problems = metrics_file(run_dir, Stage.MAIN), [], []
    rows = read_metrics(metrics_path, metrics_problems)
    checkpoint_path = _checkpoint_file(run_dir)
    state = _load_state(checkpoint_path, state_problems)
    rows, from_checkpoint = _against_checkpoint(rows, state, checkpoint_path, metrics_problems)
    readable = bool(rows or state)
    if state_problems:
        fallback = "the run is read from its folder name and metrics.csv" if readable else "the run is left out"
        notices.append(f"{checkpoint_path}: {'; '.join(state_problems)}; {fallback}.")
    if metrics_problems:
        consequence = _metrics_consequence(rows, state, from_checkpoint)
        notices.append(f"{metrics_path}: {'; '.join(metrics_problems)}{consequence}")
    if not readable:
        return None
    opt = state.get("opt") or {}
    opt = vars(opt) if isinstance(opt, argparse.Namespace) else dict(opt)
    named = _from_folder_name(kind, run_dir.name)
    teacher, student, method, weights = _what_was_trained(kind, state, opt, named, rows)
    dataset = opt.get("dataset") or named.get("dataset", "?")
    trial = opt.get("trial") if opt.get("trial") is not None else named.get("trial", "0")
    return Run(kind=kind, path=run_dir, dataset=str(dataset), teacher=teacher, student=student, method=method,
               gamma=weights[0], alpha=weights[1], beta=weights[2], trial=str(trial), rows=rows,
               weights_digest=_own_digest(state) if method == "published" else None,
               **_progress(state, opt, rows, from_checkpoint), **_provenance(run_dir, state, opt, notices))


def _own_digest(state: dict[str, Any]) -> str | None:
    """The weights digest of a checkpoint's own 'model' (reads its tensors), or None when it has none."""
    from helper.provenance import weights_digest

    weights = state.get("model")
    return weights_digest(weights) if isinstance(weights, dict) and weights else None


def _metrics_consequence(rows: list[dict[str, float]], state: dict[str, Any], from_checkpoint: bool) -> str:
    """What the summary does without the parts of metrics.csv it could not use (the end of its notice)."""
    if not rows:
        return "; the run is read from its checkpoint." if state else "; the run is left out."
    if from_checkpoint or any("test_acc1" in row for row in rows):
        return "."
    return "; best and last come from the checkpoint." if state else "; the run has no test accuracy."


def scan(save_folder: Path, notices: list[str] | None = None) -> list[Run]:
    """Every readable run under ``save_folder`` (student/student_model/*, models/*, transfer/**). Each file
    that cannot be read, or read only in part, adds one line to ``notices`` (printed to stderr when
    ``notices`` is None); a folder that cannot be read at all is left out, never the others."""
    folders: list[tuple[Path, str]] = []
    for parent, kind in ((save_folder / KIND_FOLDERS["student"][0], "student"),
                         (save_folder / KIND_FOLDERS["vanilla"][0], "vanilla")):
        if parent.is_dir():
            folders += [(child, kind) for child in sorted(parent.iterdir()) if child.is_dir()]
    transfer = save_folder / "transfer"
    if transfer.is_dir():
        candidates = {path.parent for pattern in (metrics_file(Path(), Stage.MAIN).name, f"*{LAST_SUFFIX}")
                      for path in transfer.rglob(pattern)}
        folders += [(folder, "transfer") for folder in sorted(candidates)]
    found: list[str] = []
    runs = []
    for folder, kind in folders:
        try:
            run = read_run(folder, kind, found)
        except Exception as error:  # a file this reader did not foresee must not hide the other runs
            found.append(f"{folder}: cannot be read ({type(error).__name__}: {_first_sentence(error)}); the run is "
                         "left out.")
            continue
        if run is not None:
            runs.append(run)
    if notices is None:
        for line in found:
            print(f"summary: {line}", file=sys.stderr)
    else:
        notices += found
    return runs


# ---------------------------------------------------------------------------------------------------
# grouping and labels

def method_label(method: str, alpha: float | None) -> str:
    """The papers' name of a --distill key ('crd' -> 'CRD'; with a KD term (-a > 0) 'CRD+KD'; 'crd_dot' ->
    'CRD+DOT'); 'vanilla', 'published' and unknown keys stay as they are."""
    return registry_label(method, alpha or 0.0)


def paper_columns() -> list[str]:
    """The method columns of the paper-layout table, in the registry's order (KEY+KD after KEY
    for the methods swept with a KD term too; a preset's, e.g. KD+DOT, in its place)."""
    columns = []
    for key in table_names():
        columns.append(registry_label(key))
        if key in METHODS and METHODS[key].sweep_with_kd:
            columns.append(registry_label(key, alpha=1.0))
    return columns


def is_canonical(method: str, gamma: float | None, alpha: float | None, beta: float | None) -> bool:
    """The weights of the paper tables: the method's defaults (kd: -r 0.1 -a 0.9 -b 0), or, for a
    method without a KD term, the same plus -a 1 (the +KD rows)."""
    split = split_method_name(method)
    if split is None:
        return False
    cls = METHODS[split[0]]
    if (gamma, beta) != (cls.default_gamma, cls.default_beta):
        return False
    return alpha == cls.default_alpha or (cls.default_alpha == 0 and alpha == 1.0)


def _folder_key(run: Run) -> tuple:
    """What a run folder's name says apart from the trial."""
    return run.kind, run.dataset, run.teacher, run.student, run.method, run.gamma, run.alpha, run.beta


def group_runs(runs: Iterable[Run]) -> list[Group]:
    """Pool finished runs that differ only in the trial: same folder name, same recorded settings (but
    seed and trial), same teacher. Unfinished runs and runs resumed with other settings stay alone
    (``Group.apart``). Groups of the same folder name are told apart by ``Group.distinct``; sorted as
    the paper tables are."""
    pooled: dict[tuple, list[list[Run]]] = {}
    alone: list[Group] = []
    for run in runs:
        if run.apart_reason:
            alone.append(Group([run], apart=run.apart_reason))
            continue
        candidates = pooled.setdefault(_folder_key(run), [])
        home = next((members for members in candidates if members[0].teacher_identity == run.teacher_identity
                     and same_settings(members[0].identity, run.identity)), None)
        if home is None:
            candidates.append([run])
        else:
            home.append(run)
    groups = [Group(sorted(members, key=lambda r: _natural(r.trial)))
              for candidates in pooled.values() for members in candidates] + alone
    _name_distinctions(groups)
    return sorted(groups, key=_group_order)


def _name_distinctions(groups: list[Group]) -> None:
    """Set ``distinct`` on groups that share a folder name but differ in recorded settings."""
    by_name: dict[tuple, list[Group]] = {}
    for group in groups:
        by_name.setdefault(_folder_key(group.first), []).append(group)
    for same_name in by_name.values():
        compared = [_compared_settings(group.first) for group in same_name]
        names = distinguishing_settings(compared)
        for group, settings in zip(same_name, compared):
            group.distinct = describe_settings(settings, names) if names else ""


def _compared_settings(run: Run) -> dict[str, Any]:
    """The identity settings, plus for a run without a teacher digest the teacher's measured accuracy
    (the only trace of which teacher file a run from before the run record used)."""
    if run.teacher_digest or run.teacher_acc is None:
        return run.identity
    return {**run.identity, "teacher accuracy": round(run.teacher_acc, 2)}


def _natural(text: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def pair_order(teacher: str, student: str) -> tuple:
    pair = (teacher, student)
    return (PAPER_PAIRS.index(pair), "", "") if pair in PAPER_PAIRS else (len(PAPER_PAIRS), teacher, student)


def column_order(column: str) -> tuple:
    columns = paper_columns()
    return (columns.index(column), column) if column in columns else (len(columns), column)


def _group_order(group: Group) -> tuple:
    run = group.first
    return (KINDS.index(run.kind) if run.kind in KINDS else len(KINDS), run.dataset,
            pair_order(run.teacher, run.student), column_order(group.weights_column), group.column,
            bool(group.apart), run.teacher_identity or "", _natural(run.trial))


def plain_number(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
