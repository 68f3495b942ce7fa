"""The sweep scripts (scripts/run_cifar_*.sh, scripts/sweep.py): method names and weights from the
registry, run folders from the entry scripts, skip/resume, run_status.py, and 1-epoch smoke sweeps."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import write_published_teacher

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"

pytestmark = pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


sweep = _load("sweep")
run_status = _load("run_status")


def _sh(command: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHON": sys.executable, **env}
    return subprocess.run(["sh", "-c", command], cwd=REPO, env=environment, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.registry
def test_method_names_and_weights_come_from_the_registry() -> None:
    from distiller_zoo import METHODS, table_names

    table = dict(sweep.method_table())
    expected_names = [name for key in table_names()
                      for name in ([key, f"{key}+kd"] if key in METHODS and METHODS[key].sweep_with_kd else [key])]
    assert list(table) == expected_names
    script = (f'SCRIPT_DIR={SCRIPTS}; ROOT={REPO}; . "$SCRIPT_DIR/common.sh"; load_methods; '
              'for m in $ALL_METHODS; do echo "$m $(method_flags "$m")"; done')
    result = _sh(script)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert list(lines) == expected_names
    assert lines["kd"] == "--distill kd -r 0.1 -a 0.9 -b 0"
    assert lines["pkt"] == "--distill pkt -r 1 -a 0 -b 30000"
    assert lines["correlation"] == "--distill correlation -r 1 -a 0 -b 0.02"
    assert lines["crd"] == "--distill crd -r 1 -a 0 -b 0.8"
    assert lines["crd+kd"] == "--distill crd -r 1 -a 1 -b 0.8"
    assert lines["dcd+kd"] == "--distill dcd -r 1 -a 1 -b 1"
    assert lines["dot"] == "--distill dot -r 0.1 -a 0.9 -b 0"  # KD with --optimizer dot
    for key, method in METHODS.items():
        assert lines[key] == (f"--distill {key} -r {method.default_gamma:g} -a {method.default_alpha:g} "
                              f"-b {method.default_beta:g}")


def test_bad_variables_fail_early(tmp_path: Path) -> None:
    teacher = tmp_path / "t.pth"
    result = _sh("sh scripts/run_cifar_distill.sh", METHODS="kd nope", TEACHER=str(teacher))
    assert result.returncode == 2 and "unknown method 'nope'" in result.stderr
    assert "kd hint attention" in result.stderr and "crd+kd" in result.stderr  # the valid names, from the registry
    result = _sh("sh scripts/run_cifar_distill.sh", TEACHER=str(teacher))
    assert result.returncode == 2 and "fetch_pretrained_teachers.sh" in result.stderr
    result = _sh("sh scripts/run_cifar_vanilla.sh", TRIALS="1 2")
    assert result.returncode == 2 and "TRIALS must be a positive count" in result.stderr
    result = _sh("sh scripts/run_cifar_pairs.sh", PAIRS="resnet56:resnet20", TEACHER_DIR=str(tmp_path))
    assert result.returncode == 2 and "missing teacher checkpoints" in result.stderr
    result = _sh("sh scripts/run_cifar_vanilla.sh", WORKERS="2", GPUS="0,1")
    assert result.returncode == 2 and "Set either GPUS" in result.stderr
    result = _sh("sh scripts/run_cifar_vanilla.sh", MODELS="resnet8 nope", TRIALS="1")
    assert result.returncode == 2 and "Unknown --model 'nope'" in result.stderr and "nothing was started" in \
        result.stderr


def test_workers_split_gpus_and_cores() -> None:
    workers = sweep.make_workers("0,1", 2, None)
    assert [w.name for w in workers] == ["GPU 0 #1", "GPU 1 #1", "GPU 0 #2", "GPU 1 #2"]
    assert [w.env["CUDA_VISIBLE_DEVICES"] for w in workers] == ["0", "1", "0", "1"]
    assert [w.name for w in sweep.make_workers("", None, None)] == ["worker 1"]  # default: one run at a time
    from helper.errors import UserError

    with pytest.raises(UserError, match="WORKERS must be a positive count"):
        sweep.count_or_none("two", "WORKERS")
    with pytest.raises(UserError, match="RUNS_PER_GPU=2 needs GPUS"):
        sweep.make_workers("", 2, None)
    cpu = sweep.make_workers("", None, 2)
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) >= 2:
        assert cpu[0].cpus and cpu[1].cpus and not cpu[0].cpus & cpu[1].cpus


def test_dry_run_honours_every_flag(tmp_path: Path) -> None:
    """The run folders come from train_student.py itself, so flags in EXTRA count (here -b, --dataset)."""
    teacher = write_published_teacher(tmp_path / "teachers", "resnet8", num_classes=10)
    save = tmp_path / "save"
    result = _sh("sh scripts/run_cifar_distill.sh", DRY_RUN="1", METHODS="kd crd+kd", TRIALS="1", STUDENT="resnet8",
                 TEACHER=str(teacher), SAVE_FOLDER=str(save), EXTRA="-b 2 --dataset digits")
    assert result.returncode == 0, result.stdout + result.stderr
    runs = save / "student" / "student_model"
    assert f"missing    {runs / 'kd_digits_S_resnet8_T_resnet8_r_0.1_a_0.9_b_2_trial_1'}" in result.stdout
    assert f"missing    {runs / 'crd_digits_S_resnet8_T_resnet8_r_1_a_1_b_2_trial_1'}" in result.stdout
    assert not save.exists()  # a dry run creates nothing


def _plan(save: Path, runs: list[tuple[str, str]]) -> None:
    entries = [{"run_dir": str(save / "runs" / name), "model_name": "resnet8", "epochs": 2,
                "log": str(save / "logs" / f"{name}.log"), "command": ["train_teacher.py"]} for name, _ in runs]
    (save / "sweeps").mkdir(parents=True)
    (save / "sweeps" / "test.json").write_text(json.dumps({"sweep": "test", "started": 1.0, "runs": entries}))
    (save / "logs").mkdir()


def test_run_status_shows_every_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from helper.runlock import RunLock

    save = tmp_path / "save"
    names = ["run_finished", "run_partial", "run_failed", "run_stopped", "run_held", "run_fresh"]
    _plan(save, [(name, "") for name in names])
    state = {"model": {}, "epoch": 2, "stage": "main", "partial": None}
    for name, epoch, partial in (("run_finished", 2, None), ("run_partial", 1, None), ("run_failed", 1, None),
                                 ("run_stopped", 1, {"epoch": 2, "step": 3})):
        (save / "runs" / name).mkdir(parents=True)
        torch.save({**state, "epoch": epoch, "partial": partial}, save / "runs" / name / "resnet8_last.pth")
    (save / "logs" / "run_failed.log").write_text("[sweep] x start\nerror: boom\n[sweep] x exit status 1 after 0:01\n")
    (save / "logs" / "run_stopped.log").write_text("[sweep] x start\n[sweep] x exit status 130 after 0:01\n")
    lock = RunLock.try_acquire(save / "runs" / "run_held")
    lock.write_info(worker="GPU 3")
    try:
        assert run_status.main([str(save)]) == 0
    finally:
        lock.release()
    lines = capsys.readouterr().out.splitlines()
    line_of = {name: next(line for line in lines if f" {name}" in line) for name in names}
    assert {name: line.split()[0] for name, line in line_of.items()} == {
        "run_finished": "finished", "run_partial": "partial", "run_failed": "failed", "run_stopped": "partial",
        "run_held": "running", "run_fresh": "not"}
    assert "GPU 3" in line_of["run_held"] and str(os.getpid()) in line_of["run_held"]
    assert "exit status 1" in line_of["run_failed"] and "1/2" in line_of["run_failed"]
    assert lines[-1] == "6 runs: 1 finished, 1 running, 1 failed, 2 partial, 1 not started"
    assert run_status.main([str(tmp_path / "elsewhere")]) == 2


def _smoke_env(teacher: Path, data: Path, save: Path, methods: str, **more: str) -> dict[str, str]:
    return {"EPOCHS": "1", "TRIALS": "1", "METHODS": methods, "STUDENT": "resnet8", "TEACHER": str(teacher),
            "DATA_FOLDER": str(data), "SAVE_FOLDER": str(save), "EXTRA": "--batch_size 64 --no_progress --device cpu",
            **more}


@pytest.mark.slow
def test_distill_sweep_smoke_skip_and_summary(cifar_folder: Path, tmp_path: Path) -> None:
    teacher = write_published_teacher(tmp_path / "teachers", "resnet8")
    save = tmp_path / "save"
    env = _smoke_env(teacher, cifar_folder, save, "kd dcd")
    first = _sh("sh scripts/run_cifar_distill.sh", **env)
    assert first.returncode == 0, first.stdout + first.stderr
    runs = save / "student" / "student_model"
    names = ["kd_cifar100_S_resnet8_T_resnet8_r_0.1_a_0.9_b_0_trial_1",
             "dcd_cifar100_S_resnet8_T_resnet8_r_1_a_0_b_1_trial_1"]
    assert sorted(p.name for p in runs.iterdir()) == sorted(names)
    for name in names:
        assert sorted(p.name for p in (runs / name).iterdir()) == ["metrics.csv", "resnet8_best.pth",
                                                                   "resnet8_last.pth", "run.json"]
        assert f"start  {name} on worker 1" in first.stdout and f"done   {name} on worker 1" in first.stdout
        assert (save / "logs" / "student" / "student_model" / f"{name}.log").is_file()
    assert "epoch 1/1" in first.stdout  # one worker: the run's own output on the terminal, as before
    assert "2 of 2 runs finished" in first.stdout

    again = _sh("sh scripts/run_cifar_distill.sh", **env)
    assert again.returncode == 0, again.stdout + again.stderr
    skips = [line for line in again.stdout.splitlines() if " skip " in line]
    assert len(skips) == 2 and all(any(name in line for line in skips) for name in names), again.stdout
    assert "+ " not in again.stdout  # nothing was started

    summary = subprocess.run([sys.executable, "scripts/summarize.py", str(save)], cwd=REPO, capture_output=True,
                             text=True, timeout=300)
    assert summary.returncode == 0, summary.stderr
    with open(save / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["method"] for row in rows) == ["DCD", "KD"]
    assert all(row["epochs_done"] == "1" and row["unfinished"] == "0" for row in rows)
    # the pivot names the teacher used: its arch and the first 8 hex digits of its weights digest
    assert re.search(r"\| resnet8 [0-9a-f]{8} -> resnet8 \|", summary.stdout) and (save / "summary.md").is_file()


@pytest.mark.slow
def test_transfer_sweep_finds_its_runs(stl10_folder: Path, tmp_path: Path) -> None:
    from models import model_dict

    source = tmp_path / "students" / "dcd_cifar100_S_resnet8_T_resnet20_r_1_a_1_b_1_trial_1" / "resnet8_best.pth"
    source.parent.mkdir(parents=True)
    torch.save({"model": model_dict["resnet8"](num_classes=100).state_dict(), "epoch": 240, "accuracy": 70.0,
                "arch": "resnet8"}, source)
    save = tmp_path / "save"
    env = {"EPOCHS": "1", "TRIALS": "1", "DATASETS": "stl10", "STUDENT": "resnet8", "STUDENT_CKPT": str(source),
           "DATA_FOLDER": str(stl10_folder), "SAVE_FOLDER": str(save),
           "EXTRA": "--batch_size 50 --no_progress --device cpu"}
    name = "transfer_stl10_S_resnet8_from_dcd_cifar100_S_resnet8_T_resnet20_r_1_a_1_b_1_trial_1_trial_1"
    first = _sh("sh scripts/run_transfer.sh", **env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"start  {name}" in first.stdout
    again = _sh("sh scripts/run_transfer.sh", **env)
    assert again.returncode == 0 and f"skip   {name}: finished" in again.stdout, again.stdout

    from reporting.summary import summarize

    summarize(save, formats="csv")
    with open(save / "summary.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert (row["kind"], row["dataset"], row["teacher"], row["student"], row["method"]) == \
        ("transfer", "stl10", "resnet20", "resnet8", "DCD+KD")
