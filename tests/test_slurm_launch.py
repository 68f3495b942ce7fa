"""Sweeps as SLURM job arrays (LAUNCHER=slurm, scripts/slurm_launch.py): the sbatch text against a
fixture (a fake sbatch on PATH keeps what it is given), the refusals before anything is submitted,
run_status.py's view of the array's tasks, and, with submitit's local executor (real submitit, real
processes, the same task code and requeue path), a 6-run sweep that ends with the same table and
weights as LAUNCHER=local although one of its tasks is preempted mid-run and requeued."""
from __future__ import annotations

import argparse
import csv
import errno
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

from datagen import write_cifar100
from helper.checkpoint import load_checkpoint
from helper.errors import UserError
from helper.run_folder import RunPlan
from helper.runlock import holder

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import run_status  # noqa: E402
import slurm_launch  # noqa: E402
import sweep  # noqa: E402

FIXTURE = REPO / "tests" / "data" / "slurm_sweep.sbatch"
FAKE_SBATCH = """#!/bin/sh
# stands in for SLURM's sbatch: keeps the script it is given and answers as sbatch does
if [ -n "${FAKE_SBATCH_ERROR:-}" ]; then echo "$FAKE_SBATCH_ERROR" >&2; exit 1; fi
cp "$1" "$FAKE_SBATCH_DIR/submitted.sh"
echo "Submitted batch job 4242"
"""
SLURM_VARIABLES = [name for name, _, _ in slurm_launch.VARIABLES]


def fake_commands(folder: Path, **scripts: str) -> Path:
    """A bin folder holding the given commands (name -> shell script)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in scripts.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return folder


@pytest.fixture
def slurm_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH with a fake sbatch (and srun, which submitit looks for) in front; no SLURM_SWEEP_* set."""
    for name in SLURM_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    bin_folder = fake_commands(tmp_path / "bin", sbatch=FAKE_SBATCH, srun="#!/bin/sh\nexit 0\n")
    monkeypatch.setenv("PATH", f"{bin_folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SBATCH_DIR", str(tmp_path))
    return tmp_path


def planned_runs(save: Path, count: int) -> list[types.SimpleNamespace]:
    """Runs as scripts/sweep.py plans them (script, args, plan, log_path, label), none started."""
    runs = []
    for trial in range(1, count + 1):
        run_dir = save / "models" / f"resnet8_vanilla_trial_{trial}"
        plan = RunPlan(run_dir, "resnet8", 2, save)
        runs.append(types.SimpleNamespace(script="train_teacher.py", args=["--model", "resnet8", "--trial", str(trial)],
                                          plan=plan, label=run_dir.name,
                                          log_path=save / "logs" / "models" / f"{run_dir.name}.log"))
    return runs


def test_settings_come_from_the_environment_with_documented_defaults() -> None:
    settings = slurm_launch.SlurmSettings.from_env({})
    assert (settings.gpus, settings.nodes, settings.cpus, settings.minutes, settings.parallelism) == (1, 1, 8, 1440, 32)
    assert (settings.partition, settings.mem, settings.executor, settings.wait) == ("", "", "slurm", False)
    assert [slurm_launch.parse_time(text) for text in ("90", "2:30:00", "1-00:00:00", "1-12", "45:30")] == [
        90, 150, 1440, 2160, 46]
    assert slurm_launch.parse_extra("--qos=high --constraint a100 --exclusive") == {
        "qos": "high", "constraint": "a100", "exclusive": True}
    for variables, message in (({"SLURM_SWEEP_GPUS": "two"}, "SLURM_SWEEP_GPUS must be a whole number"),
                               ({"SLURM_SWEEP_TIME": "soon"}, "SLURM_SWEEP_TIME must be minutes"),
                               ({"SLURM_SWEEP_EXTRA": "qos=high"}, "long sbatch options"),
                               ({"SLURM_SWEEP_MEM": "lots"}, "SLURM_SWEEP_MEM must be"),
                               ({"SLURM_SWEEP_EXECUTOR": "cloud"}, "SLURM_SWEEP_EXECUTOR must be"),
                               ({"SLURM_SWEEP_TIME": "2", "SLURM_SWEEP_SIGNAL_SECONDS": "180"}, "not shorter")):
        with pytest.raises(UserError, match=message):
            slurm_launch.SlurmSettings.from_env(variables)


def test_every_setting_is_in_the_readme_table() -> None:
    readme = (REPO / "README.md").read_text()
    table_rows = {line.split("|")[1].strip(" `"): line for line in readme.splitlines()
                  if line.startswith("| `SLURM_SWEEP_")}
    assert sorted(table_rows) == sorted(SLURM_VARIABLES)
    for name, default, _ in slurm_launch.VARIABLES:
        assert not default or default in table_rows[name].split("|")[2], (name, default)


def test_sbatch_text_matches_the_fixture(slurm_env: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in (("SLURM_SWEEP_PARTITION", "gpu"), ("SLURM_SWEEP_ACCOUNT", "lab"), ("SLURM_SWEEP_GPUS", "1"),
                        ("SLURM_SWEEP_CPUS", "6"), ("SLURM_SWEEP_MEM", "32G"), ("SLURM_SWEEP_TIME", "12:00:00"),
                        ("SLURM_SWEEP_PARALLELISM", "2"), ("SLURM_SWEEP_EXTRA", "--qos=high"),
                        ("SLURM_SWEEP_SETUP", "module load cuda")):
        monkeypatch.setenv(name, value)
    save = slurm_env / "save"
    runs = planned_runs(save, 3)
    recorded = []
    settings = slurm_launch.SlurmSettings.from_env(os.environ)
    assert slurm_launch.launch(runs, settings, "run_cifar_vanilla.sh", dry_run=False,
                               record=lambda: recorded.append(True)) == 0
    (folder,) = (save / "slurm").iterdir()
    text = (slurm_env / "submitted.sh").read_text()
    expected = (FIXTURE.read_text().replace("@FOLDER@", str(folder / "submitit")).replace("@ROOT@", str(REPO))
                .replace("@PYTHON@", sys.executable))
    assert text == expected
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["job_id"] == "4242" and manifest["cancel"] == ["scancel", "4242"] and recorded == [True]
    assert [(task["job_id"], Path(task["run_dir"]).name) for task in manifest["tasks"]] == [
        ("4242_0", "resnet8_vanilla_trial_1"), ("4242_1", "resnet8_vanilla_trial_2"),
        ("4242_2", "resnet8_vanilla_trial_3")]
    out, err = capsys.readouterr()
    assert "SLURM job 4242 on partition gpu (array of 3 task(s), at most 2 at once" in out
    assert "scancel 4242" in out and f"python scripts/run_status.py {save}" in out
    assert "looks local to this machine" in err  # tmp_path is no shared file system


def test_what_is_refused_before_anything_is_submitted(slurm_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save = slurm_env / "save"
    settings = slurm_launch.SlurmSettings.from_env({"SLURM_SWEEP_PARTITION": "nope"})
    monkeypatch.setenv("FAKE_SBATCH_ERROR", "sbatch: error: invalid partition specified: nope")
    with pytest.raises(UserError, match="invalid partition specified: nope") as refused:
        slurm_launch.launch(planned_runs(save, 2), settings, "sweep", dry_run=False)
    assert "Nothing was submitted" in str(refused.value) and not list(save.glob("slurm/*"))

    monkeypatch.setenv("PATH", str(fake_commands(slurm_env / "empty")))
    with pytest.raises(UserError, match="needs SLURM's sbatch and srun on PATH"):
        slurm_launch.check_commands(settings)

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(UserError, match="has no working file locks"):
        slurm_launch.check_save_folder(save, settings)

    def cli(**values: str) -> argparse.Namespace:
        return argparse.Namespace(**{"launcher": "local", "gpus": "", "runs_per_gpu": "", "workers": "",
                                     "dry_run": False, **values})

    with pytest.raises(UserError, match="Unknown LAUNCHER 'slrum'. Did you mean 'slurm'?"):
        sweep.slurm_settings(cli(launcher="slrum"))
    with pytest.raises(UserError, match="GPUS=0,1 apply to LAUNCHER=local"):
        sweep.slurm_settings(cli(launcher="slurm", gpus="0,1"))
    assert sweep.slurm_settings(cli()) is None


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")
def test_the_sweep_scripts_refuse_a_bad_launcher_in_one_paragraph(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if name not in SLURM_VARIABLES}
    no_slurm = fake_commands(tmp_path / "bin")
    for name in ("sh", "cut", "tr", "basename", "dirname"):
        if shutil.which(name):
            (no_slurm / name).symlink_to(shutil.which(name))
    for variables, message in (({"LAUNCHER": "slrum"}, "Unknown LAUNCHER 'slrum'. Did you mean 'slurm'?"),
                               ({"LAUNCHER": "slurm", "PATH": str(no_slurm)}, "needs SLURM's sbatch and srun")):
        result = subprocess.run(["sh", "scripts/run_cifar_vanilla.sh"], cwd=REPO, capture_output=True, text=True,
                                env={**env, "PYTHON": sys.executable, "MODELS": "resnet8", "TRIALS": "1",
                                     "SAVE_FOLDER": str(tmp_path / "save"), **variables}, timeout=120)
        assert result.returncode == 2 and message in " ".join(result.stderr.split()), result.stderr
        assert "Traceback" not in result.stderr and not (tmp_path / "save").exists()


def test_a_lustre_mount_with_node_local_locks_is_warned_about(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slurm_launch, "mount_of", lambda path: ("/lustre", "lustre", {"rw", "localflock"}))
    warnings = slurm_launch.check_save_folder(tmp_path / "save", slurm_launch.SlurmSettings())
    assert any("keeps flock locks local to each node" in warning for warning in warnings)
    monkeypatch.setattr(slurm_launch, "mount_of", lambda path: ("/nfs", "nfs4", {"rw", "hard"}))
    warnings = slurm_launch.check_save_folder(tmp_path / "save", slurm_launch.SlurmSettings())
    assert not any("keeps flock locks local" in warning or "file system (mounted" in warning for warning in warnings)
    monkeypatch.setattr(slurm_launch, "mount_of", lambda path: ("/", "tmpfs", {"rw"}))
    save_warning, code_warning = slurm_launch.check_save_folder(tmp_path / "save", slurm_launch.SlurmSettings())
    assert "is on a tmpfs file system (mounted at '/'), which looks local to this machine" in save_warning
    assert f"the repository '{REPO}' is on a tmpfs file system" in code_warning


def test_a_task_with_several_gpus_or_nodes_runs_torchrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (run,) = planned_runs(tmp_path / "save", 1)
    node = types.SimpleNamespace(node=1, hostnames=["gpu-7", "gpu-8"], job_id="4242_3")
    single = slurm_launch.TrainTask.of(run, slurm_launch.SlurmSettings(gpus=1))
    assert single.command(False, node) == [sys.executable, str(REPO / "train_teacher.py"), *run.args]
    one_node = slurm_launch.TrainTask.of(run, slurm_launch.SlurmSettings(gpus=8))
    assert one_node.command(True, node)[1:7] == ["-m", "torch.distributed.run", "--nproc_per_node", "8",
                                                  "--standalone", str(REPO / "train_teacher.py")]
    assert one_node.command(True, node)[-2:] == ["--resume", "auto"]
    monkeypatch.setenv("SLURM_JOB_ID", "4245")
    two_nodes = slurm_launch.TrainTask.of(run, slurm_launch.SlurmSettings(gpus=4, nodes=2))
    assert two_nodes.command(False, node)[3:15] == [
        "--nproc_per_node", "4", "--nnodes", "2", "--node_rank", "1", "--rdzv_backend", "c10d",
        "--rdzv_endpoint", "gpu-7:24245", "--rdzv_id", "4242_3"]


def test_a_plain_sweep_never_imports_submitit(tmp_path: Path) -> None:
    line = "\t".join(["train_teacher.py", "--model", "resnet8", "--dataset", "digits", "--save_folder",
                      str(tmp_path / "save")])
    program = (
        "import io, sys\n"
        f"sys.path.insert(0, {str(REPO / 'scripts')!r})\n"
        "import sweep\n"
        "def dry(launcher):\n"
        f"    sys.stdin = io.StringIO({line!r} + '\\n')\n"
        "    try:\n"
        "        sweep.main(['--dry_run', '--launcher', launcher])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "    return 'submitit' in sys.modules\n"
        "print('local', dry('local'))\n"
        "print('slurm', dry('slurm'))\n")
    result = subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "local False" in result.stdout and "slurm True" in result.stdout, result.stdout
    assert "#SBATCH --requeue" in result.stdout  # the dry run shows the job array it would submit


def write_status_case(save: Path) -> dict[str, Path]:
    """A sweep plan and a job array manifest of six runs, their logs in six states."""
    names = ["run_pending", "run_requeued", "run_failed", "run_crashed", "run_queued", "run_cancelled"]
    submitit_folder = save / "slurm" / "sweep-1" / "submitit"
    submitit_folder.mkdir(parents=True)
    entries, tasks = [], []
    for index, name in enumerate(names):
        entries.append({"run_dir": str(save / "runs" / name), "model_name": "resnet8", "epochs": 2,
                        "log": str(save / "logs" / f"{name}.log"), "command": ["train_teacher.py"]})
        tasks.append({"task": index, "job_id": f"4242_{index}", "run_dir": entries[-1]["run_dir"],
                      "log": entries[-1]["log"], "label": name})
    (save / "sweeps").mkdir()
    (save / "sweeps" / "sweep.json").write_text(json.dumps({"sweep": "sweep", "started": 1.0, "runs": entries}))
    (save / "slurm" / "sweep-1" / "manifest.json").write_text(json.dumps(
        {"sweep": "sweep", "submitted": 1.0, "executor": "slurm", "job_id": "4242",
         "submitit_folder": str(submitit_folder), "tasks": tasks}))
    logs = save / "logs"
    logs.mkdir()
    start = "[sweep] 2026-01-01 00:00:00 {} on slurm 4242_{} (host n1, rank 0): python train_teacher.py\n"
    (logs / "run_requeued.log").write_text(start.format("start", 1) + "epoch 1/2\n[sweep] x exit status 143 after "
                                           "1:00\n[sweep] x requeued after SIGUSR2 (time limit or preemption)\n")
    (logs / "run_failed.log").write_text(start.format("start", 2) + "error: boom\n[sweep] x exit status 1 after 0:01\n")
    (logs / "run_crashed.log").write_text(start.format("start", 3))
    (logs / "run_cancelled.log").write_text(start.format("start", 5) + "[sweep] x exit status 143 after 0:09\n")
    (save / "runs" / "run_cancelled").mkdir(parents=True)
    torch.save({"model": {}, "epoch": 1, "stage": "main", "partial": None},
               save / "runs" / "run_cancelled" / "resnet8_last.pth")
    (submitit_folder / "4242_3_0_log.out").write_text(
        "submitit INFO - Starting\nTraceback (most recent call last):\nRuntimeError: CUDA out of memory\n"
        "submitit ERROR (x) - Submitted job triggered an exception\n")
    return {name: save / "runs" / name for name in names}


def test_run_status_reads_the_array_from_its_files_and_squeue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    save = tmp_path / "save"
    write_status_case(save)
    monkeypatch.setenv("PATH", str(fake_commands(tmp_path / "no_slurm")))  # no squeue/sacct: the files say
    assert run_status.main([str(save)]) == 0
    lines = capsys.readouterr().out.splitlines()
    line_of = {name: next(line for line in lines if f" {name}" in line) for name in
               ("run_pending", "run_requeued", "run_failed", "run_crashed", "run_queued", "run_cancelled")}
    assert {name: line.split()[0] for name, line in line_of.items()} == {
        "run_pending": "pending", "run_requeued": "requeued", "run_failed": "failed", "run_crashed": "failed",
        "run_queued": "pending", "run_cancelled": "partial"}, lines
    assert "slurm 4242_1" in line_of["run_requeued"] and "boom" in line_of["run_failed"]
    assert "CUDA out of memory" in line_of["run_crashed"]
    assert lines[-1] == "6 runs: 0 finished, 0 running, 2 failed, 1 partial, 0 not started, 2 pending, 1 requeued"

    calls = tmp_path / "scancel_calls"
    bin_folder = fake_commands(tmp_path / "slurm_bin",
                               squeue="#!/bin/sh\nprintf '4242_0|RUNNING\\n4242_1|PENDING\\n4242_4|PENDING\\n'\n",
                               sacct="#!/bin/sh\nprintf '4242_3|OUT_OF_MEMORY\\n4242_5|CANCELLED by 1000\\n'\n",
                               scancel=f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    monkeypatch.setenv("PATH", str(bin_folder))
    assert run_status.main([str(save)]) == 0
    lines = capsys.readouterr().out.splitlines()
    line_of = {name: next(line for line in lines if f" {name}" in line) for name in
               ("run_pending", "run_requeued", "run_crashed", "run_queued", "run_cancelled")}
    assert line_of["run_pending"].split()[0] == "running" and "slurm 4242_0" in line_of["run_pending"]
    assert line_of["run_requeued"].split()[0] == "requeued"  # pending again after it ran: requeued
    assert line_of["run_queued"].split()[0] == "pending" and line_of["run_cancelled"].split()[0] == "partial"
    assert "SLURM state OUT_OF_MEMORY" in line_of["run_crashed"]
    assert run_status.main([str(save), "--cancel"]) == 0
    assert calls.read_text().split() == ["4242"] and "cancelled job array(s) 4242" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# End to end with submitit's local executor


@pytest.fixture(scope="module")
def small_cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar100(tmp_path_factory.mktemp("cifar_small"), n_train=100, n_test=50, seed=0)


def vanilla_env(data: Path, save: Path, **more: str) -> dict[str, str]:
    """scripts/run_cifar_vanilla.sh: resnet8 and resnet14, 3 trials each, 2 epochs of 4 steps."""
    base = {name: value for name, value in os.environ.items() if name not in SLURM_VARIABLES}
    return {**base, "PYTHON": sys.executable, "MODELS": "resnet8 resnet14", "TRIALS": "3", "EPOCHS": "2",
            "DATA_FOLDER": str(data), "SAVE_FOLDER": str(save),
            "EXTRA": "--batch_size 25 --no_progress --device cpu", **more}


def wait_for(condition, what: str, timeout: float = 300):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def table(save: Path) -> list[dict[str, str]]:
    from reporting.summary import summarize

    summarize(save, formats="csv")
    with open(save / "summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists() or shutil.which("sh") is None, reason="needs /proc and sh")
def test_a_preempted_task_is_requeued_and_the_sweep_ends_as_a_local_one(small_cifar: Path, tmp_path: Path) -> None:
    local = subprocess.run(["sh", "scripts/run_cifar_vanilla.sh"], cwd=REPO, capture_output=True, text=True,
                           env=vanilla_env(small_cifar, tmp_path / "local", WORKERS="2"), timeout=600)
    assert local.returncode == 0 and "6 of 6 runs finished" in local.stdout, local.stdout + local.stderr

    save = tmp_path / "slurm"
    output = tmp_path / "slurm_sweep.txt"
    env = vanilla_env(small_cifar, save, LAUNCHER="slurm", SLURM_SWEEP_EXECUTOR="local", SLURM_SWEEP_GPUS="0",
                      SLURM_SWEEP_WAIT="1")
    with open(output, "w") as handle:
        process = subprocess.Popen(["sh", "scripts/run_cifar_vanilla.sh"], cwd=REPO, env=env, stdout=handle,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    run_dir = save / "models" / "resnet14_vanilla_trial_2"
    try:
        wait_for(lambda: (run_dir / "resnet14_last.pth").exists(), "the end of epoch 1")
        pid = holder(run_dir)["pid"]
        os.kill(pid, signal.SIGSTOP)  # hold the run mid-way, then preempt its task as SLURM does: every process
        task = parent_pid(pid)
        for target in (task, pid):
            os.kill(target, signal.SIGUSR2)
        os.kill(pid, signal.SIGCONT)
        code = process.wait(timeout=600)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    out = output.read_text()
    assert code == 0 and "6 of 6 submitted runs finished; failed: none" in out, out
    log = (save / "logs" / "models" / f"{run_dir.name}.log").read_text()
    # the run itself survived the USR2 (blocked), stopped on the task's SIGTERM with a checkpoint, and resumed
    assert "Stopped by SIGTERM" in log and "exit status 143" in log and "requeued after SIGUSR2" in log, log
    assert log.count(" on slurm ") == 2 and "Resuming at epoch" in log, log
    (folder,) = (save / "slurm").iterdir()
    assert "Requeued job" in "".join(path.read_text() for path in (folder / "submitit").glob("*_log.out"))

    resumed = load_checkpoint(run_dir / "resnet14_last.pth")["model"]
    straight = load_checkpoint(tmp_path / "local" / "models" / run_dir.name / "resnet14_last.pth")["model"]
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[key], straight[key]) for key in straight)  # exact resume
    assert table(save) == table(tmp_path / "local")
    assert len(table(save)) == 2 and all(row["trials"] == "3" for row in table(save))
