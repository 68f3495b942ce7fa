"""Published tables as data: the settings and the number of every cell, one TOML file per table.

A file ``recipes/<table>.toml`` holds one published table (or paper): its title, source and dataset,
the settings all its cells share (``[settings]``: train_student.py flag names, only those that differ
from the defaults) and one ``[[cell]]`` per (teacher, student, method) with its own settings and the
published top-1 (%). Optional ``[[teacher]]`` entries give the published teachers' accuracies. A cell
is named ``<table>/<teacher>-<student>/<method>`` (e.g. ``dkd-cifar100/resnet56-resnet20/dkd``);
``train_student.py --recipe NAME`` trains it, ``sh scripts/reproduce.sh <table>`` trains them all, and
the reproduction table compares each group of runs with the cell whose settings it has.

Folders listed in the environment variable RECIPE_PATH (separated by ':') are read before this one.
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distiller_zoo import METHODS
from distiller_zoo.base import (PRESETS, add_distillation_arguments, method_label, resolve_method, split_method_name,
                                unused_method_flags)
from helper.errors import UserError, did_you_mean
from helper.options import SMALL_LR_ARCHS, TRAINING_RANGES, check_range, parse_decay_epochs
from helper.provenance import IDENTITY_EXCLUDED, NOT_TRAINING
from models import all_model_dict

FOLDER = Path(__file__).resolve().parent
SCRIPT = "train_student.py"  # the entry script the tables drive
TABLE_KEYS = ("title", "source", "dataset", "script", "notes", "settings", "cell", "teacher")
CELL_KEYS = ("teacher", "student", "method", "settings", "published", "std", "n", "source", "note", "checked")
# what a cell's teacher, student and method set; never a setting
CELL_FIELDS = {"dataset": "the file's dataset", "model_s": "the cell's student", "distill": "the cell's method"}
WEIGHTS = ("gamma", "alpha", "beta")


@dataclass(frozen=True)
class Cell:
    """One published number and the settings it was obtained with."""

    table: str
    dataset: str
    teacher: str
    student: str
    method: str                    # a sweep name: a --distill name ('dkd', 'dot'), or KEY+kd (that method with -a 1)
    published: float
    settings: dict[str, Any]       # the file's [settings] with the cell's own on top
    std: float | None = None
    n: int | None = None
    source: str = ""
    note: str = ""
    checked: bool = True

    @property
    def name(self) -> str:
        return f"{self.table}/{self.teacher}-{self.student}/{self.method}"

    @property
    def distill(self) -> str:
        """The run-folder method name: a --distill key, or a method trained with another optimizer ('dot')."""
        return self.method.partition("+")[0]

    @property
    def key(self) -> str:
        """The method's registry key ('kd' for 'dot')."""
        return method_key(self.distill)

    @property
    def label(self) -> str:
        """The method's table name: 'DKD', 'CRD+KD', 'KD+DOT'."""
        return method_label(self.distill, alpha=1.0 if self.method.endswith("+kd") else 0.0)

    def flags(self) -> dict[str, Any]:
        """Every flag value the cell sets: dataset, student, method, the method's weights (KEY+kd: -a 1)
        and the settings."""
        method = METHODS[self.key]
        alpha = 1.0 if self.method.endswith("+kd") else method.default_alpha
        split = split_method_name(self.distill)
        optimizer = {} if self.distill in PRESETS or split is None or split[1] == "sgd" else {"optimizer": split[1]}
        distill = self.distill if self.distill in PRESETS else self.key
        return {"dataset": self.dataset, "model_s": self.student, "distill": distill, **optimizer,
                "gamma": method.default_gamma, "alpha": alpha, "beta": method.default_beta, **self.settings}

    def expected(self) -> dict[str, Any]:
        """The settings a run of this cell records: the script's defaults (the learning rate as
        train_student.py derives it from the student) under ``flags()``."""
        unused = unused_method_flags(self.key)
        defaults = {dest: value for dest, value in script_defaults().items() if dest not in unused}
        defaults["learning_rate"] = 0.01 if self.student in SMALL_LR_ARCHS else 0.05
        return {**defaults, **self.flags()}


@dataclass(frozen=True)
class Table:
    """One recipe file."""

    name: str
    path: Path
    title: str
    source: str
    dataset: str
    notes: str = ""
    cells: tuple[Cell, ...] = ()
    teachers: dict[str, float] = field(default_factory=dict)  # arch -> published top-1 (%)


# ---------------------------------------------------------------------------------------------------
# the flags a recipe may set

@functools.cache
def script_flags() -> dict[str, argparse.Action]:
    """train_student.py's flags that set what a run trains, by option name (dest)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_distillation_arguments(parser)
    skipped = NOT_TRAINING | IDENTITY_EXCLUDED
    return {action.dest: action for action in parser._actions if action.dest not in skipped}


def script_defaults() -> dict[str, Any]:
    """The defaults of ``script_flags()`` (None where the script derives the value)."""
    return {dest: action.default for dest, action in script_flags().items()}


def flag_owners(dest: str) -> list[str]:
    """The methods declaring the flag ``dest`` ('DKD', ...)."""
    return [method.label() for method in METHODS.values() if any(flag.dest == dest for flag in method.flags)]


def method_key(name: str) -> str:
    """The registry key of a run-folder method name ('dkd' -> 'dkd', 'dot' -> 'kd', 'crd_dot' -> 'crd')."""
    split = split_method_name(name)
    return split[0] if split is not None else name


def check_setting(dest: str, value: Any, method: str) -> Any:
    """The value a recipe sets for ``dest`` in a cell of ``method`` (a run-folder method name), converted
    to the flag's type; UserError when it is no flag of the method or the script, or out of range."""
    method = method_key(method)
    flags = script_flags()
    if dest in CELL_FIELDS:
        raise UserError(f"'{dest}' is set by {CELL_FIELDS[dest]}, not by a setting.")
    if dest not in flags or dest in unused_method_flags(method):
        owners = flag_owners(dest)
        if owners:
            raise UserError(f"'{dest}' is a flag of {', '.join(owners)}, not of {METHODS[method].label()}.")
        choices = [name for name in flags if name not in unused_method_flags(method) and name not in CELL_FIELDS]
        raise UserError(f"'{dest}' is no training flag of {SCRIPT} or of {METHODS[method].label()}."
                        f"{did_you_mean(dest, choices)} Keys are the scripts' option names, e.g. epochs, "
                        "learning_rate, lr_decay_epochs, kd_T, gamma/alpha/beta (-r/-a/-b).")
    value = _converted(flags[dest], dest, value)
    for flag in (flag for method_class in METHODS.values() for flag in method_class.flags if flag.dest == dest):
        flag.check(value)
    for name, low, low_ok, high, high_ok, what in TRAINING_RANGES:
        if name == dest:
            check_range(name, value, low, low_ok, high, high_ok, what)
    if dest in WEIGHTS:
        check_range(dest, value, 0, True, None, False, "a loss weight")
    if dest == "lr_decay_epochs":
        parse_decay_epochs(value)
    return value


def _converted(action: argparse.Action, dest: str, value: Any) -> Any:
    if action.nargs == 0:  # a switch
        if not isinstance(value, bool):
            raise UserError(f"'{dest}' is a switch: true or false, got {value!r}.")
        return value
    kind = action.type or str
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise UserError(f"'{dest}' takes a {kind.__name__}, got {value!r}"
                        + (" (a list as the flag takes it: a string, e.g. \"150,180,210\")"
                           if isinstance(value, list) else "") + ".")
    if action.choices is not None and value not in action.choices:
        raise UserError(f"'{dest}' is one of {', '.join(map(str, action.choices))}, got {value!r}.")
    return value


# ---------------------------------------------------------------------------------------------------
# reading the files

def folders() -> list[Path]:
    """Where recipe files are read: RECIPE_PATH's folders, then recipes/."""
    extra = [Path(part) for part in os.environ.get("RECIPE_PATH", "").split(os.pathsep) if part]
    return [*extra, FOLDER]


def tables() -> dict[str, Table]:
    """Every table, by name, in name order (a name in an earlier folder hides a later one)."""
    return dict(_tables(tuple(folders())))


@functools.cache
def _tables(search: tuple[Path, ...]) -> tuple[tuple[str, Table], ...]:
    found: dict[str, Path] = {}
    for folder in search:
        for path in sorted(folder.glob("*.toml")):
            found.setdefault(path.stem, path)
    return tuple((name, parse_table(found[name])) for name in sorted(found))


def all_cells() -> list[Cell]:
    return [cell for table in tables().values() for cell in table.cells]


def load_table(name: str) -> Table:
    """The table ``name``; UserError naming the near ones when there is none."""
    known = tables()
    if name not in known:
        listing = ", ".join(known) or "none"
        raise UserError(f"No recipe table '{name}'.{did_you_mean(name, known)} Tables: {listing} (files "
                        f"{FOLDER}/<table>.toml; sh scripts/reproduce.sh --list describes them).")
    return known[name]


def find_cell(name: str) -> Cell:
    """The cell ``<table>/<teacher>-<student>/<method>``; UserError naming the near ones."""
    table_name = name.partition("/")[0]
    if table_name not in tables():
        load_table(table_name)  # raises, naming the tables
    cells = {cell.name: cell for cell in load_table(table_name).cells}
    if name not in cells:
        raise UserError(f"No recipe '{name}' in the table '{table_name}'.{did_you_mean(name, cells)} A recipe is "
                        f"named <table>/<teacher>-<student>/<method>, e.g. {next(iter(cells), '')}; "
                        f"`python -m recipes --cells {table_name}` lists them.")
    return cells[name]


def find_cell_or_none(name: str) -> Cell | None:
    """The cell ``name`` when it exists (a run's recorded recipe may have been renamed since)."""
    return next((cell for cell in all_cells() if cell.name == name), None)


def published_teachers(dataset: str) -> dict[str, float]:
    """Teacher arch -> the published accuracy the tables of ``dataset`` give (the first table's)."""
    found: dict[str, float] = {}
    for table in tables().values():
        if table.dataset == dataset:
            for arch, value in table.teachers.items():
                found.setdefault(arch, value)
    return found


def parse_table(path: Path) -> Table:
    """Read and check one recipe file (UserError naming the file and the cell)."""
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"The recipe file '{path}' is not valid TOML: {error}. Fix that line (recipes/__init__.py "
                        "describes the format).") from None
    try:
        return _table(path, data)
    except UserError as error:
        raise UserError(f"The recipe file '{path}': {error}") from None


def _table(path: Path, data: dict[str, Any]) -> Table:
    _known_keys(data, TABLE_KEYS, "a table")
    for key in ("title", "source", "dataset"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise UserError(f"'{key}' (a string) is missing.")
    datasets = script_flags()["dataset"].choices
    if data["dataset"] not in datasets:
        raise UserError(f"dataset '{data['dataset']}' is none of {', '.join(datasets)}.")
    if data.get("script", SCRIPT) != SCRIPT:
        raise UserError(f"script '{data['script']}': recipes drive {SCRIPT} only.")
    shared = data.get("settings", {})
    if not isinstance(shared, dict) or not isinstance(data.get("cell", []), list):
        raise UserError("[settings] is a table and [[cell]] an array of tables.")
    cells, seen = [], set()
    for number, entry in enumerate(data.get("cell", []), 1):
        cell = _cell(path.stem, data["dataset"], shared, entry, number)
        if cell.name in seen:
            raise UserError(f"cell {number}: {cell.name} appears twice; one entry per (teacher, student, method).")
        seen.add(cell.name)
        cells.append(cell)
    teachers = {}
    for number, entry in enumerate(data.get("teacher", []), 1):
        if not isinstance(entry, dict) or set(entry) != {"arch", "published"}:
            raise UserError(f"[[teacher]] {number}: give exactly arch and published.")
        teachers[_arch(entry["arch"], f"[[teacher]] {number}")] = _percent(entry["published"], f"[[teacher]] {number}")
    return Table(path.stem, path, data["title"], data["source"], data["dataset"], str(data.get("notes", "")),
                 tuple(cells), teachers)


def _cell(table: str, dataset: str, shared: dict[str, Any], entry: Any, number: int) -> Cell:
    where = f"cell {number}"
    if not isinstance(entry, dict):
        raise UserError(f"{where} is not a table.")
    _known_keys(entry, CELL_KEYS, where)
    for key in ("teacher", "student", "method", "published"):
        if key not in entry:
            raise UserError(f"{where}: '{key}' is missing.")
    teacher, student = _arch(entry["teacher"], where), _arch(entry["student"], where)
    method = _method(entry["method"], where)
    where = f"{where} ({teacher} -> {student}, {method})"
    own = entry.get("settings", {})
    if not isinstance(own, dict):
        raise UserError(f"{where}: settings is an inline table, e.g. settings = {{ dkd_beta = 2.0 }}.")
    settings = {}
    for dest, value in {**shared, **own}.items():
        try:
            settings[dest] = check_setting(dest, value, method.partition("+")[0])
        except UserError as error:
            raise UserError(f"{where}: {error}") from None
    std, n = entry.get("std"), entry.get("n")
    if std is not None and (not isinstance(std, (int, float)) or isinstance(std, bool) or not std >= 0):
        raise UserError(f"{where}: std must be a number >= 0, got {std!r}.")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise UserError(f"{where}: n must be a whole number >= 1, got {n!r}.")
    if not isinstance(entry.get("checked", True), bool):
        raise UserError(f"{where}: checked is true or false.")
    return Cell(table, dataset, teacher, student, method, _percent(entry["published"], where), settings,
                None if std is None else float(std), n, str(entry.get("source", "")), str(entry.get("note", "")),
                entry.get("checked", True))


def _known_keys(entry: dict[str, Any], known: tuple[str, ...], what: str) -> None:
    for key in entry:
        if key not in known:
            raise UserError(f"'{key}' is no key of {what}.{did_you_mean(key, known)} Keys: {', '.join(known)}.")


def _arch(name: Any, where: str) -> str:
    if not isinstance(name, str) or name not in all_model_dict:
        raise UserError(f"{where}: '{name}' is no architecture of models/.{did_you_mean(str(name), all_model_dict)}")
    return name


def _method(name: Any, where: str) -> str:
    base, plus, variant = str(name).partition("+")
    split = split_method_name(base)
    if not isinstance(name, str) or split is None or (plus and variant != "kd"):
        raise UserError(f"{where}: method '{name}' is no --distill key (or KEY+kd, or KEY_OPTIMIZER)."
                        f"{did_you_mean(base, METHODS)}")
    key = split[0]
    if plus and METHODS[key].default_alpha != 0:
        raise UserError(f"{where}: '{name}': {METHODS[key].label()} has a KD term already (-a "
                        f"{METHODS[key].default_alpha:g}); KEY+kd is for methods without one.")
    return name


def _percent(value: Any, where: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100
            or not math.isfinite(value)):
        raise UserError(f"{where}: published must be a top-1 accuracy in % (0-100), got {value!r}.")
    return float(value)


# ---------------------------------------------------------------------------------------------------
# a run of a cell

def same_value(first: Any, second: Any) -> bool:
    """Equal settings (numbers by value: 2 and 2.0 are one setting; a list such as RepDistiller saved
    --lr_decay_epochs in, [150, 180, 210], equals the flag's text '150,180,210')."""
    if isinstance(first, list) != isinstance(second, list):
        as_text = [",".join(map(str, value)) if isinstance(value, list) else str(value).replace(" ", "")
                   for value in (first, second)]
        return as_text[0] == as_text[1]
    numbers = (int, float)
    if (isinstance(first, numbers) and isinstance(second, numbers) and not isinstance(first, bool)
            and not isinstance(second, bool)):
        return float(first) == float(second)
    return first == second


def departures(cell: Cell, settings: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """dest -> (value in ``settings``, the cell's value) for every setting of a run that the cell sets
    otherwise (the dataset, student and method are matched already; seed and trial tell trials apart)."""
    expected = cell.expected()
    return {dest: (settings[dest], expected[dest]) for dest in sorted(expected.keys() & settings.keys())
            if dest not in CELL_FIELDS and dest not in IDENTITY_EXCLUDED and settings[dest] is not None
            and not same_value(settings[dest], expected[dest])}


def apply(cell: Cell, opt: argparse.Namespace, given: set[str]) -> dict[str, Any]:
    """Set the cell's flags on ``opt`` where the command line gave none; refuse a given dataset, student
    or method that contradicts the cell. Returns the record a run keeps of it: the recipe's name, the
    flags it applied and the departures (the given flags that differ from the recipe)."""
    for dest, value in cell.flags().items():
        if dest not in given:
            setattr(opt, dest, value)
        elif dest in CELL_FIELDS and opt.__dict__[dest] != value and not (
                dest == "distill" and value in (opt.distill, *resolve_method(value).aliases)):
            flag = {"dataset": "--dataset", "model_s": "--model_s", "distill": "--distill"}[dest]
            raise UserError(f"--recipe {cell.name} trains {flag} {value}, but the command line gives {flag} "
                            f"{opt.__dict__[dest]}. Drop {flag}, or choose a recipe of that "
                            f"{'dataset' if dest == 'dataset' else 'pair and method'}: python -m recipes --list.")
    explicit = {dest: getattr(opt, dest) for dest in given if dest in script_flags()}
    return {"name": cell.name, "teacher": cell.teacher, "settings": cell.flags(),
            "departures": {dest: {"given": ours, "recipe": theirs}
                           for dest, (ours, theirs) in departures(cell, explicit).items()}}
