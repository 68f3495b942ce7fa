"""A run folder, in one place: its name from a run's settings and back (``parse_folder_name``),
where each kind of run keeps its folders, the names of the files in it (checkpoints, metrics), the
plan of a run (``RunPlan``: folder, status), resuming it (``resolve_resume``), its run record
(run.json) and which checkpoints belong to which training stage.

    save/student/student_model/<distill>_<dataset>_S_<model_s>_T_<model_t>_r_<r>_a_<a>_b_<b>_trial_<t>/
    save/models/<model>[_<dataset>]_vanilla[_trial_<t>]/
    save/transfer/transfer_model/transfer_<dataset>_S_<model_s>_from_<student run folder>_trial_<t>/
each holding <model>_last.pth, <model>_best.pth, ckpt_epoch_<N>.pth, metrics.csv (metrics_init.csv
for a pre-training stage) and run.json.
"""
from __future__ import annotations

import os
import re
from enum import StrEnum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helper import distributed, runlock
from helper.checkpoint import load_checkpoint
from helper.errors import UserError
from helper.provenance import (RECORD_FILE, check_same_run, complete_record, conflict_message, extended,
                               identity_differences, recorded_identity, write_run_record)
from helper.runlock import LOCK_FILE
from helper.util import plural

# kind of run -> (its run folders, its tensorboard folders), under --save_folder
KIND_FOLDERS = {"student": (Path("student") / "student_model", Path("student") / "student_tensorboards"),
                "vanilla": (Path("models"), Path("teacher_tensorboards")),
                "transfer": (Path("transfer") / "transfer_model", Path("transfer") / "transfer_tensorboards")}
LAST_SUFFIX, BEST_SUFFIX = "_last.pth", "_best.pth"

_STUDENT_NAME = re.compile(r"^(?P<distill>.+?)_(?P<dataset>[A-Za-z0-9]+)_S_(?P<model_s>.+?)_T_(?P<model_t>.+)"
                           r"_r_(?P<gamma>[^_]+)_a_(?P<alpha>[^_]+)_b_(?P<beta>[^_]+)_trial_(?P<trial>.+)$")
_TEACHER_NAME = re.compile(r"^(?P<stem>.+?)_vanilla(?:_trial_(?P<trial>.+))?$")
_TRANSFER_NAME = re.compile(r"^transfer_(?P<dataset>[A-Za-z0-9]+)_S_(?P<model_s>.+?)_from_(?P<source>.+)"
                            r"_trial_(?P<trial>[^_]+)$")
_EPOCH_CHECKPOINT = re.compile(r"ckpt_epoch_(\d+)\.pth")


class Stage(StrEnum):
    """A training stage: the main one, or a method's pre-training of its own modules (abound, factor,
    fsp). Checkpoints record its value under 'stage' ('main' or 'init'; none: main)."""

    MAIN = "main"
    INIT = "init"


def student_folder_name(distill: str, dataset: str, model_s: str, model_t: str, gamma: float, alpha: float,
                        beta: float, trial: str) -> str:
    """<distill>_<dataset>_S_<model_s>_T_<model_t>_r_<r>_a_<a>_b_<b>_trial_<t>, as RepDistiller names it."""
    return f"{distill}_{dataset}_S_{model_s}_T_{model_t}_r_{gamma:g}_a_{alpha:g}_b_{beta:g}_trial_{trial}"


def teacher_folder_name(model: str, dataset: str, trial: str) -> str:
    """'resnet32x4_vanilla' for CIFAR-100 trial 0, else with the dataset and/or '_trial_<t>' added."""
    name = f"{model}_vanilla" if dataset == "cifar100" else f"{model}_{dataset}_vanilla"
    return name if str(trial) == "0" else f"{name}_trial_{trial}"


def transfer_folder_name(dataset: str, model_s: str, student_checkpoint: str | Path, trial: str) -> str:
    """transfer_<dataset>_S_<model_s>_from_<the student checkpoint's run folder>_trial_<t>."""
    source = Path(student_checkpoint).resolve().parent.name
    return f"transfer_{dataset}_S_{model_s}_from_{source}_trial_{trial}"


def parse_folder_name(kind: str, name: str) -> dict[str, str]:
    """What a run folder's name says, the inverse of ``<kind>_folder_name`` ({} for another name).
    student: distill, dataset, model_s, model_t, gamma, alpha, beta (as written), trial; vanilla:
    stem ('<model>' or '<model>_<dataset>'), trial; transfer: dataset, model_s, source, trial."""
    if kind == "student" and (match := _STUDENT_NAME.match(name)):
        return match.groupdict()
    if kind == "vanilla" and (match := _TEACHER_NAME.match(name)):
        return {"stem": match["stem"], "trial": match["trial"] or "0"}
    if kind == "transfer" and (match := _TRANSFER_NAME.match(name)):
        return match.groupdict()
    return {}


def run_folder(save_folder: str | Path, kind: str, name: str) -> Path:
    """Where a ``kind`` run ('student', 'vanilla', 'transfer') named ``name`` lives under ``save_folder``."""
    return Path(save_folder) / KIND_FOLDERS[kind][0] / name


def tensorboard_folder(save_folder: str | Path, kind: str, name: str) -> Path:
    """Where the tensorboard logs of a ``kind`` run named ``name`` go under ``save_folder``."""
    return Path(save_folder) / KIND_FOLDERS[kind][1] / name


def last_checkpoint(run_dir: Path, model_name: str) -> Path:
    """The checkpoint written after every epoch (and on a stop): what --resume auto continues."""
    return run_dir / f"{model_name}{LAST_SUFFIX}"


def best_checkpoint(run_dir: Path, model_name: str) -> Path:
    """The checkpoint of the epoch with the best test accuracy so far."""
    return run_dir / f"{model_name}{BEST_SUFFIX}"


def last_checkpoints(run_dir: Path) -> list[Path]:
    """The folder's <model>_last.pth files (one, for a run trained here), sorted."""
    return sorted(run_dir.glob(f"*{LAST_SUFFIX}"))


def best_checkpoints(run_dir: Path) -> list[Path]:
    """The folder's <model>_best.pth files, sorted."""
    return sorted(run_dir.glob(f"*{BEST_SUFFIX}"))


def is_last_checkpoint(path: Path) -> bool:
    return path.name.endswith(LAST_SUFFIX)


def epoch_checkpoint(run_dir: Path, epoch: int) -> Path:
    """The checkpoint kept every --save_freq epochs of the main stage."""
    return run_dir / f"ckpt_epoch_{epoch}.pth"


def epoch_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """The folder's ckpt_epoch_<N>.pth files as (N, path), latest first."""
    found = [(int(match.group(1)), path) for path in run_dir.glob("ckpt_epoch_*.pth")
             if (match := _EPOCH_CHECKPOINT.fullmatch(path.name))]
    return sorted(found, reverse=True)


def metrics_file(run_dir: Path, stage: Stage) -> Path:
    """metrics.csv for the main stage, metrics_<stage>.csv for a pre-training stage."""
    return run_dir / ("metrics.csv" if stage == Stage.MAIN else f"metrics_{Stage(stage).value}.csv")


def checkpoint_stage(state: dict[str, Any]) -> Stage | None:
    """The training stage a checkpoint was written in (checkpoints from before stages existed: main;
    None for a value no stage has)."""
    value = state.get("stage", Stage.MAIN.value)
    return Stage(value) if value in set(Stage) else None


def resumes_stage(state: dict[str, Any] | None, stage: Stage) -> bool:
    """Whether ``state`` (a checkpoint to resume, or None) continues ``stage``."""
    return state is not None and checkpoint_stage(state) == stage


def ensure_writable(folder: Path) -> None:
    """Create ``folder`` (and parents) or explain why it cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write_test.{os.getpid()}"  # one per process: torchrun ranks probe together
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UserError(f"Cannot write to the run folder '{folder}' ({error.strerror}). Pass a writable "
                        "--save_folder, or fix the folder's permissions.") from None


def is_finished(state: dict[str, Any], epochs: int) -> bool:
    """A checkpoint of a finished run: main stage, ``epochs`` epochs done, not stopped mid-epoch."""
    return (checkpoint_stage(state) == Stage.MAIN and int(state.get("epoch", 0)) >= epochs
            and not state.get("partial"))


@dataclass(frozen=True)
class RunPlan:
    """Where an entry script's run lives, when it is done and what it is asked to be: what
    ``--print_run_dir`` reports and what the sweeps (scripts/sweep.py) schedule by."""

    run_dir: Path
    model_name: str        # checkpoints are <run_dir>/<model_name>_last.pth etc.
    epochs: int
    save_folder: Path
    # helper.provenance.run_identity: settings and source checkpoint (None: not compared)
    identity: dict[str, Any] | None = field(default=None, compare=False, hash=False)

    @property
    def last_path(self) -> Path:
        return last_checkpoint(self.run_dir, self.model_name)

    def differences(self, state: dict[str, Any] | None = None) -> list[tuple[str, Any, Any]]:
        """How the run recorded in the folder differs from this plan's identity (empty when it
        matches, has no record, or nothing was asked)."""
        try:
            recorded = recorded_identity(self.run_dir, state)
        except UserError:  # a damaged run.json: training into the folder explains it
            return []
        if recorded is None or self.identity is None:
            return []
        return identity_differences(recorded, self.identity)

    def checkpoint_status(self) -> str:
        """'finished', 'unfinished' (a resumable or unreadable checkpoint), 'missing', or 'conflict'
        (the folder holds a run trained with other settings or another teacher: never trained into)."""
        return self._inspect()[0]

    def _inspect(self) -> tuple[str, list[tuple[str, Any, Any]]]:
        """checkpoint_status() and, for a conflict, the differences (read from one checkpoint load)."""
        if not self.last_path.is_file():
            return "missing", []
        try:
            state = load_checkpoint(self.last_path, "last checkpoint", mmap=True)
        except UserError:  # --resume auto explains what is wrong with the file
            return "unfinished", []
        differences = self.differences(state)
        if differences:
            return "conflict", differences
        return ("finished" if is_finished(state, self.epochs) else "unfinished"), []

    def status(self) -> str:
        """checkpoint_status(), or 'running' while another live process holds the folder."""
        return "running" if runlock.holder(self.run_dir) is not None else self.checkpoint_status()

    def describe(self) -> str:
        """'<status> <run folder>', and for a conflict the paragraph listing what differs (for a run folder
        that holds a run, a note when the data's content could not be compared without loading it)."""
        if runlock.holder(self.run_dir) is not None:
            return f"running {self.run_dir}"
        status, differences = self._inspect()
        line = f"{status} {self.run_dir}"
        if differences:
            return f"{line}\n{conflict_message(self.run_dir, differences, 'train into')}"
        if status != "missing" and self.identity is not None and not (self.identity.get("data") or {}).get("digest"):
            line += ("\nnote: the data's content digest is not known yet (no run has loaded these files since they "
                     "last changed), so only the settings and the teacher were compared; a run compares the data "
                     "once it has loaded it.")
        return line


def resolve_resume(run_dir: Path, model_name: str, resume: str | None, epochs: int,
                   identity: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Return the checkpoint to resume from (or None for a fresh run).

    Creates the run folder (clear error when it cannot be written). Without --resume, an existing
    run folder with a checkpoint is never overwritten: finished runs ask for a new --trial,
    unfinished ones for --resume auto. A checkpoint to resume is refused when the run it belongs to
    was trained with other settings or another teacher than ``identity``.
    """
    ensure_writable(run_dir)
    last = last_checkpoint(run_dir, model_name)
    if resume is None:
        if last.exists():
            state = load_checkpoint(last, "last checkpoint")
            check_same_run(run_dir, recorded_identity(run_dir, state), identity, "train into")
            if is_finished(state, epochs):
                raise UserError(f"The run folder '{run_dir}' already holds a finished run "
                                f"({plural(state['epoch'], 'epoch')}, best accuracy {state.get('best_acc', 0):.2f}). "
                                "Use a new --trial to train again, or delete the folder.")
            raise UserError(f"The run folder '{run_dir}' holds an unfinished run (checkpoint '{last.name}'). "
                            "Add --resume auto to continue it, or use a new --trial to start over.")
        others = sorted(path.name for path in run_dir.glob("*.pth"))
        if others:
            raise UserError(f"The run folder '{run_dir}' already holds checkpoints ({', '.join(others[:3])}), e.g. a "
                            "fetched published teacher. Use a new --trial so nothing is overwritten.")
        return None
    if resume == "auto":
        if not last.exists():
            if distributed.is_main():  # before torchrun's group is joined every rank would print
                print(f"--resume auto: no checkpoint in '{run_dir}', starting from scratch.")
            return None
        state = load_checkpoint(last, "resume checkpoint", damaged_hint=replacement_hint(run_dir, last))
        check_same_run(run_dir, recorded_identity(run_dir, state), identity, "resume")
        return state
    state = load_checkpoint(Path(resume), "--resume checkpoint")
    source_dir = Path(resume).parent
    check_same_run(source_dir, recorded_identity(source_dir, state), identity, "resume")
    return state


def replacement_hint(run_dir: Path, damaged: Path) -> str:
    """What to do when a run's ``damaged`` last checkpoint cannot be read: copy the newest readable
    ckpt_epoch_<N>.pth over it (the run then restarts from epoch N), or, with none, start over."""
    for number, candidate in epoch_checkpoints(run_dir):
        try:
            epoch = int(load_checkpoint(candidate, "checkpoint", mmap=True).get("epoch", number))
        except UserError:
            continue
        return (f"Replace it by the run's last good checkpoint, '{candidate.name}' (epoch {epoch}): cp '{candidate}' "
                f"'{damaged}', then rerun with --resume auto; the run restarts from epoch {epoch}. Or delete the "
                "folder to train the run from the start.")
    return (f"The run has no other readable checkpoint: delete the run folder '{run_dir}' and rerun the command "
            "(without --resume) to train it from the start.")


def discard_lone_record(run_dir: Path) -> None:
    """Remove ``run_dir``'s run.json when nothing else was written there (no checkpoint, no log):
    a run that failed before training leaves no folder that looks like a run (the lock's release
    then removes the folder it created)."""
    try:
        if {path.name for path in run_dir.iterdir()} <= {RECORD_FILE, LOCK_FILE}:
            (run_dir / RECORD_FILE).unlink(missing_ok=True)
    except OSError:
        pass


def record_run(plan: RunPlan, data: Any, resume: dict[str, Any] | None) -> dict[str, Any] | None:
    """The run's record (its identity, data sizes and content digest, code version, date;
    helper/provenance.py). A fresh run writes it to run.json; a resumed one keeps the record it started
    with, after checking that the data is the same (a longer --epochs is noted in it). Every checkpoint
    carries it under 'run'."""
    if plan.identity is None:
        return None
    digest = getattr(data, "content_digest", None)
    record = complete_record(plan.identity, data.num_train, data.num_test, data.num_classes, digest)
    if resume is not None:
        recorded = recorded_identity(plan.run_dir, resume)
        if recorded is None:  # a run from before records existed: nothing to compare with
            return record
        check_same_run(plan.run_dir, recorded, record, "resume")
        record = extended(recorded, record)  # --epochs above the recorded number continues the run
        if record is recorded:
            return recorded
    if distributed.is_main():
        write_run_record(plan.run_dir, record)
    return record
