"""What a run was trained with: its settings, the checkpoint it learned from, its data and code.

A run folder is named after a few flags (method, models, weights, trial); everything else that
determines its training is recorded here, in ``<run folder>/run.json`` at the start and under
``'run'`` in each of its checkpoints, so that resuming, skipping and summarizing compare what was
trained rather than the folder name.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from helper.errors import UserError
from helper.util import atomic_write

RECORD_FILE = "run.json"
RECORD_FORMAT = 1
# Flags that never change what is trained: where outputs go, how often to log, how fast to run.
# Every other option (the training flags, the method's own flags, the seed) is a setting of the run.
NOT_TRAINING = frozenset({
    "data_folder", "save_folder", "print_freq", "tb_freq", "save_freq", "num_workers", "device", "resume",
    "print_run_dir", "no_progress", "loader", "channels_last", "compile", "decode", "teacher_bank",
    "build_teacher_bank",
    "path_t", "path_s",  # the checkpoint itself is recorded by its content (digest), not by its path
    "lr_decay_epochs_list",  # derived from --lr_decay_epochs
    "recipe", "recipe_record",  # the recipe is recorded apart (run_identity): its settings are the run's
})
# Settings that tell trials of one experiment apart: they never split a group of runs.
IDENTITY_EXCLUDED = frozenset({"seed", "trial"})
# Settings a method declares rather than a flag sets, recorded only away from these values (so that the
# records written before they existed, which lack them, still match): absent means this value.
DECLARED_DEFAULTS: dict[str, Any] = {"teacher_mode": "eval"}
DIGEST_LENGTH = 16
DATA_CONTENT = "data content (images and labels)"  # how a difference of the data's content digest is named


def weights_digest(weights: Mapping[str, torch.Tensor]) -> str:
    """A digest of a state_dict's content: names, dtypes, shapes and values (not the file's bytes,
    so the same weights saved twice, or with a DataParallel 'module.' prefix, digest alike)."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        tensor = weights[name]
        if not isinstance(tensor, torch.Tensor):
            continue
        digest.update(f"{name.removeprefix('module.')}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:DIGEST_LENGTH]


def checkpoint_source(path: str | Path, state: dict[str, Any], arch: str, num_classes: int | None) -> dict[str, Any]:
    """What a run learns from (a teacher, or the student a transfer starts from): its path, weights
    digest and what the checkpoint records of itself (dataset, classes, accuracy; None when it
    records nothing, as RepDistiller's published files)."""
    options = state.get("opt")
    options = vars(options) if isinstance(options, argparse.Namespace) else options
    recorded_run = state.get("run") if isinstance(state.get("run"), dict) else {}
    dataset = ((recorded_run.get("settings") or {}).get("dataset") or
        (options.get("dataset") if isinstance(options, dict) else None))
    accuracy = state.get("best_acc", state.get("accuracy"))
    return {"path": str(path), "digest": weights_digest(state["model"]), "arch": arch,
            "dataset": dataset if isinstance(dataset, str) else None, "num_classes": num_classes,
            "accuracy": round(float(accuracy), 4) if isinstance(accuracy, (int, float, torch.Tensor)) else None}


def check_source_fits(source: dict[str, Any], dataset: str, num_classes: int | None, flag: str,
                      role: str = "teacher", same_dataset: bool = True) -> None:
    """Refuse, before any data is loaded, a checkpoint that cannot serve this run: one that records
    another dataset (when ``same_dataset``), or whose classifier has another number of classes than
    ``num_classes`` (None: not known before loading). Files that record no dataset (RepDistiller's,
    the fetched teachers) are judged by their class count alone."""
    where = f"{flag} '{source['path']}'"
    recorded = source.get("dataset")
    if same_dataset and recorded and recorded != dataset:
        raise UserError(f"{where} is a {source.get('arch')} {role} trained on {recorded} (its checkpoint records "
                        f"--dataset {recorded}), but this run trains on {dataset}. Pass --dataset {recorded}, or a "
                        f"{role} trained on {dataset}.")
    classes = source.get("num_classes")
    if same_dataset and num_classes is not None and classes is not None and classes != num_classes:
        raise UserError(f"{where} is a {source.get('arch')} {role} with {classes} output classes, but --dataset {dataset} "
                        f"needs {num_classes}. Pass the --dataset it was trained on, or a {role} trained on {dataset}.")


def training_settings(opt: argparse.Namespace, unused: Iterable[str] = (), **declared: Any) -> dict[str, Any]:
    """The run's settings: every option that affects training (all but NOT_TRAINING and ``unused``,
    e.g. the flags of other methods), as plain JSON values, plus the ``declared`` ones (what the
    method says of itself, e.g. teacher_mode) that differ from DECLARED_DEFAULTS."""
    skipped = NOT_TRAINING | set(unused)
    settings: dict[str, Any] = {key: value for key, value in declared.items()
                                if key not in DECLARED_DEFAULTS or value != DECLARED_DEFAULTS[key]}
    for key, value in sorted(vars(opt).items()):
        if key in skipped:
            continue
        if isinstance(value, (str, int, float, bool, type(None))):
            settings[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float, bool)) for v in value):
            settings[key] = list(value)
    return settings


def code_version() -> str:
    """The git commit of this checkout ('+dirty' when files differ from it), or 'unknown'."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_identity(script: str, settings: dict[str, Any], source: dict[str, Any] | None,
                 data_digest: dict[str, str] | None = None, recipe: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """What a run is asked to be, known before any data is loaded: the script, its settings, its
    source checkpoint ('teacher': the teacher, or for a transfer the student it starts from), when
    known without loading it the data's content digest ({'train', 'test'}; dataset/digest.py), and
    for a run of a published recipe (--recipe) its name, the flags it applied and the flags given
    otherwise ('departures'). Runs compare by settings, teacher and data, not by recipe."""
    identity = {"format": RECORD_FORMAT, "script": script, "settings": settings, "teacher": source}
    if data_digest:
        identity["data"] = {"digest": data_digest}
    return identity if recipe is None else {**identity, "recipe": recipe}


def complete_record(identity: dict[str, Any], train_size: int, test_size: int, num_classes: int,
                    data_digest: dict[str, str] | None = None) -> dict[str, Any]:
    """The identity plus what is known once the data is loaded (split sizes, classes, content
    digest), the code version and the date."""
    data = {**(identity.get("data") or {}), "train": train_size, "test": test_size, "num_classes": num_classes}
    if data_digest:
        data["digest"] = data_digest
    return {**identity, "data": data, "code_version": code_version(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def write_run_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Write ``run_dir/run.json`` atomically (with the umask's mode, as any file the run writes)."""
    text = json.dumps(record, indent=1, sort_keys=True) + "\n"
    atomic_write(Path(run_dir) / RECORD_FILE, lambda handle: handle.write(text.encode()))


def read_run_record(run_dir: Path) -> dict[str, Any] | None:
    """The record of ``run_dir`` (run.json), or None for a run made before records existed.
    A damaged file is a UserError naming it."""
    path = Path(run_dir) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"The run record '{path}' is damaged ({type(error).__name__}: {error}). It says what the run "
                        "was trained with; if you know the run's flags, delete the file and rerun with them "
                        "(a new one is written), or delete the whole run folder to start over.") from None
    return record if isinstance(record, dict) else None


def recorded_identity(run_dir: Path, state: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """What ``run_dir`` was trained with: its run.json, else the 'run' entry of its checkpoint ``state``."""
    record = read_run_record(run_dir)
    if record is None and state is not None and isinstance(state.get("run"), dict):
        record = state["run"]
    return record


def identity_differences(recorded: dict[str, Any], requested: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(setting, recorded value, requested value) for each difference between two records: their
    settings (a setting one of them lacks counts only when the other has it), the source checkpoint's
    digest, and the data sizes and content digest where both records know them. More epochs than
    recorded is no difference: the same run continued (the schedule depends on the epoch, not on the
    total)."""
    differences = [(name, old, new) for name, old, new in
                   settings_differences(recorded.get("settings") or {}, requested.get("settings") or {})
                   if not is_extension(name, old, new)]
    old_source, new_source = recorded.get("teacher") or {}, requested.get("teacher") or {}
    if old_source.get("digest") != new_source.get("digest"):
        differences.append(("teacher checkpoint", describe_source(old_source), describe_source(new_source)))
    old_data, new_data = recorded.get("data") or {}, requested.get("data") or {}
    for key in sorted(set(old_data) & set(new_data)):
        if old_data[key] != new_data[key]:
            name = DATA_CONTENT if key == "digest" else f"data {key}"
            differences.append((name, describe_data(old_data[key]), describe_data(new_data[key])))
    return differences


def describe_data(value: Any) -> Any:
    """A data digest {'train': ..., 'test': ...} as 'train 1a2b3c4d5e6f7a8b, test 9f8e7d6c5b4a3928'."""
    if isinstance(value, dict):
        return ", ".join(f"{split} {digest}" for split, digest in sorted(value.items(), reverse=True))
    return value


def is_extension(name: str, old: Any, new: Any) -> bool:
    """Whether asking for ``new`` instead of the recorded ``old`` only trains the run for longer."""
    return name == "epochs" and isinstance(old, int) and isinstance(new, int) and new > old


def extended(recorded: dict[str, Any], requested: dict[str, Any]) -> dict[str, Any]:
    """``recorded`` with the requested (larger) number of epochs, the earlier one kept in 'extended'."""
    old, new = recorded["settings"].get("epochs"), requested["settings"].get("epochs")
    if not is_extension("epochs", old, new):
        return recorded
    history = [*recorded.get("extended", []), {"epochs": old, "to": new, "code_version": code_version()}]
    return {**recorded, "settings": {**recorded["settings"], "epochs": new}, "extended": history}


def settings_differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(name, old, new) for each setting whose value differs; a name missing on one side is compared
    as absent only when it is present on the other (a flag added to the code later differs only when
    set away from nothing)."""
    return [(key, old.get(key, "(absent)"), new.get(key, "(absent)")) for key in sorted(set(old) | set(new))
            if old.get(key, "(absent)") != new.get(key, "(absent)") and not _is_number_pair(old.get(key), new.get(key))]


def _is_number_pair(a: Any, b: Any) -> bool:
    """Numbers equal in value (1 and 1.0) are the same setting."""
    numbers = (int, float)
    return (isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and
        not isinstance(b, bool) and float(a) == float(b))


def describe_source(source: dict[str, Any]) -> str:
    """'resnet32x4 3f2a9c0d1e4b5a67 (cifar100, 79.42%)' for a record's source checkpoint entry."""
    if not source:
        return "(none)"
    details = ", ".join(str(part) for part in (source.get("dataset"), _percent(source.get("accuracy"))) if part)
    return (f"{source.get('arch')} {source.get('digest')}" + (f" ({details})" if details else "") +
        (f" from '{source['path']}'" if source.get("path") else ""))


def _percent(value: Any) -> str | None:
    return f"{value:.2f}%" if isinstance(value, (int, float)) else None


def check_same_run(run_dir: Path, recorded: dict[str, Any] | None, requested: dict[str, Any] | None,
                   action: str) -> None:
    """Refuse to ``action`` (e.g. 'resume') the run in ``run_dir`` with settings other than those it
    was trained with, listing each difference and what to do. Runs without a record pass."""
    if recorded is None or requested is None:
        return
    differences = identity_differences(recorded, requested)
    if differences:
        raise UserError(conflict_message(run_dir, differences, action))


def conflict_message(run_dir: Path, differences: list[tuple[str, Any, Any]], action: str) -> str:
    """One paragraph: which settings differ (recorded -> requested) and the three ways out."""
    listed = "; ".join(f"{name}: {old} -> {new}" for name, old, new in differences)
    data = any(name == DATA_CONTENT for name, _, _ in differences)
    return (f"Cannot {action} the run in '{run_dir}': it was trained with other settings than this command asks "
            f"for ({listed}). "
            + ("The images or labels of the dataset in --data_folder are not those the run was trained on, though "
               "their number may be. " if data else "")
            + "A run folder holds one experiment. To train this one, pass another --trial (or another "
            "--save_folder), or delete the folder to replace the old run; to continue the old run, repeat its "
            f"settings (recorded in run.json in that folder){' on the data it was trained on' if data else ''}.")
