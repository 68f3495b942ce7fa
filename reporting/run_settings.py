"""What a run was trained with, as the results summary compares runs: its recorded settings and teacher.

A run folder written by the entry scripts holds ``run.json`` (the run record: ``settings``, every flag
value that affects training; ``teacher``, the teacher checkpoint's digest, arch and accuracy), and each
of its checkpoints carries the same dict under ``'run'``. Runs from before the record have neither: their
settings are read from the checkpoint's saved options (``'opt'``), minus the options that do not change
what is trained (output paths, logging and speed switches).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from helper import provenance
from helper.provenance import DECLARED_DEFAULTS, IDENTITY_EXCLUDED, NOT_TRAINING

# saved options (checkpoint 'opt') that do not affect training: those of the run record, and the names
# RepDistiller derived from the folder (they contain the trial)
NOT_TRAINING_OPTIONS = NOT_TRAINING | frozenset({"model_path", "tb_path", "model_name", "tb_folder", "save_path",
                                                 "teacher_state", "given_flags"})
SHORT_DIGEST = 8


def read_run_record(run_dir: Path, notices: list[str] | None = None) -> dict[str, Any] | None:
    """The run record ``<run_dir>/run.json`` as a dict; None for runs made before it existed, and None with
    a line in ``notices`` (printed to stderr when ``notices`` is None) when the file cannot be read or is
    not a run record."""
    path = Path(run_dir) / provenance.RECORD_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        problem = f"damaged ({type(error).__name__}: {str(error)[:120]})"
    else:
        if isinstance(record, dict) and all(isinstance(record.get(key) or {}, dict) for key in ("settings", "teacher")):
            return record
        problem = "not a run record (no mapping of 'settings' and 'teacher')"
    line = f"{path}: {problem}; the run is compared by its checkpoint's options."
    if notices is None:
        print(f"summary: {line}", file=sys.stderr)
    else:
        notices.append(line)
    return None


def settings_from_options(opt: dict[str, Any]) -> dict[str, Any]:
    """A run's training settings from the options saved in its checkpoint (runs without a record): all
    but the options that do not affect training and, for a distillation run, the flags of the other
    methods and optimizers, with the method named as a record names it (``--distill dot`` and
    ``--distill kd --optimizer dot`` alike: 'dot')."""
    from distiller_zoo.base import recorded_settings, split_method_name, unused_method_flags
    from helper.optimizers import unused_optimizer_settings

    split = split_method_name(opt["distill"]) if isinstance(opt.get("distill"), str) else None
    if split is None:
        return {key: value for key, value in opt.items() if key not in NOT_TRAINING_OPTIONS}
    optimizer = argparse.Namespace(optimizer=opt.get("optimizer") or split[1])
    unused = NOT_TRAINING_OPTIONS | unused_method_flags(split[0]) | unused_optimizer_settings(optimizer)
    return recorded_settings({key: value for key, value in opt.items() if key not in unused})


def identity_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings two runs must share to be trials of one experiment (all but seed and trial; a
    declared setting a run does not record, e.g. teacher_mode, at its default)."""
    return {**DECLARED_DEFAULTS, **{key: value for key, value in settings.items() if key not in IDENTITY_EXCLUDED}}


def with_data_digest(settings: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """``settings`` plus 'data': the short content digests of the record's training and test split
    ('1a2b3c4d/9f8e7d6c'), so that runs on other images of the same size are not trials of one
    experiment. Records from before data digests have none: they are compared by their settings."""
    digest = (record.get("data") or {}).get("digest")
    if not isinstance(digest, dict):
        return settings
    return {**settings, "data": "/".join(str(digest.get(split))[:SHORT_DIGEST] for split in ("train", "test"))}


def settings_differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(name, old, new) for each setting whose value differs (None where one side lacks it)."""
    return [(key, old.get(key), new.get(key)) for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def same_settings(first: dict[str, Any], second: dict[str, Any]) -> bool:
    """Whether two runs' identity settings agree on every setting both recorded (a run from before the
    record saved more options than a record holds; those cannot tell the runs apart)."""
    return all(first[key] == second[key] for key in first.keys() & second.keys())


def distinguishing_settings(settings: list[dict[str, Any]]) -> list[str]:
    """The names of the settings whose recorded values differ between any of ``settings``."""
    names = sorted({key for entry in settings for key in entry})
    return [name for name in names if len({_hashable(entry[name]) for entry in settings if name in entry}) > 1]


def describe_settings(settings: dict[str, Any], names: list[str]) -> str:
    """'epochs=3, kd_T=2' for the given setting names ('?' where the run did not record one)."""
    return ", ".join(f"{name}={_plain(settings[name]) if name in settings else '?'}" for name in names)


def describe_differences(differences: list[tuple[str, Any, Any]]) -> str:
    """'epochs 1 -> 3, kd_T 4 -> 2'."""
    return ", ".join(f"{name} {_plain(old)} -> {_plain(new)}" for name, old, new in differences)


def teacher_cell(arch: str, digest: str | None, accuracy: float | None) -> str:
    """'resnet32x4 3f2a9c0d (79.42)': the teacher's arch, short content digest and recorded accuracy."""
    text = arch + (f" {digest[:SHORT_DIGEST]}" if digest else "")
    return text + (f" ({accuracy:.2f})" if accuracy is not None else "")


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True)


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ",".join(_plain(item) for item in value)
    return str(value)
