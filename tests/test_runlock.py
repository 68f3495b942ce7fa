"""The run-folder lock (helper/runlock.py) and the entry scripts' --print_run_dir."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from training import student as train_student
from training import teacher as train_teacher
from training import transfer as transfer_student
from helper.errors import UserError
from helper.runlock import INHERITED_LOCK_VARIABLE, LOCK_FILE, RunLock, claim_run_folder, holder
from helpers import ROOT, run_script, write_published_teacher

HOLD = """
import sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from helper.runlock import RunLock
lock = RunLock.try_acquire(Path(sys.argv[2]))
lock.write_info(worker="GPU 7")
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def held_by_other_process(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen]]:
    """A run folder locked by another live process (killed at teardown)."""
    run_dir = tmp_path / "save" / "student" / "student_model" / "kd_cifar100_S_resnet8_T_resnet8_r_0.1_a_0.9_b_0_trial_1"
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(ROOT), str(run_dir)], stdout=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout.readline().strip() == "held"
        yield run_dir, process
    finally:
        process.kill()
        process.wait()


def test_lock_is_exclusive_and_freed_when_the_holder_dies(held_by_other_process: tuple[Path, subprocess.Popen]
                                                          ) -> None:
    run_dir, process = held_by_other_process
    assert RunLock.try_acquire(run_dir) is None
    info = holder(run_dir)
    assert info is not None and info["pid"] == process.pid and info["worker"] == "GPU 7"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert holder(run_dir) is None  # the OS released it; the stale file does not block
    lock = RunLock.try_acquire(run_dir)
    assert lock is not None
    lock.release()
    assert not (run_dir / LOCK_FILE).exists()


def test_release_removes_only_what_the_lock_created(tmp_path: Path) -> None:
    fresh = tmp_path / "a" / "run"
    lock = RunLock.try_acquire(fresh)
    assert holder(fresh) is not None
    lock.release()
    assert not fresh.exists() and (tmp_path / "a").is_dir()  # nothing was written: no empty run folder left
    kept = tmp_path / "b"
    kept.mkdir()
    (kept / "metrics.csv").write_text("epoch\n")
    lock = RunLock.try_acquire(kept)
    lock.release()
    assert sorted(p.name for p in kept.iterdir()) == ["metrics.csv"]
    assert holder(tmp_path / "never") is None and not (tmp_path / "never").exists()  # probing creates nothing


def test_claim_refuses_a_held_folder_and_adopts_an_inherited_lock(
        held_by_other_process: tuple[Path, subprocess.Popen], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir, process = held_by_other_process
    with pytest.raises(UserError, match=f"being trained by another process \\(pid {process.pid}"):
        with claim_run_folder(run_dir):
            pass
    other = tmp_path / "other"
    lock = RunLock.try_acquire(other)  # what scripts/sweep.py does before starting the run
    monkeypatch.setenv(INHERITED_LOCK_VARIABLE, str(os.dup(lock.fd)))  # the run's copy of the sweep's fd
    with claim_run_folder(other):  # another open of the file could not lock it; the inherited one is used
        assert holder(other)["pid"] == os.getpid()
        (other / "metrics.csv").write_text("epoch\n")
    assert INHERITED_LOCK_VARIABLE not in os.environ and not (other / LOCK_FILE).exists()
    lock.release()
    assert (other / "metrics.csv").is_file()
    with claim_run_folder(run_dir, main_process=False):  # torchrun ranks other than 0 take no lock
        pass


def test_train_student_refuses_a_folder_held_by_a_live_process(
        held_by_other_process: tuple[Path, subprocess.Popen], tmp_path: Path) -> None:
    run_dir, process = held_by_other_process
    teacher = write_published_teacher(tmp_path / "teachers", "resnet8")
    result = run_script("train_student.py", "--path_t", str(teacher), "--model_s", "resnet8", "--trial", "1",
                        "--save_folder", str(tmp_path / "save"), "--data_folder", str(tmp_path / "no_data"),
                        cwd=tmp_path, check=False, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error: The run folder" in result.stderr and f"(pid {process.pid}" in result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in run_dir.iterdir()] == [LOCK_FILE]  # untouched


def test_a_run_failing_before_its_first_epoch_leaves_no_folder(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLERS_OFFLINE", "1")
    teacher = write_published_teacher(tmp_path / "teachers", "resnet8")
    with pytest.raises(SystemExit) as stopped:  # no dataset in --data_folder
        train_student.main(["--path_t", str(teacher), "--model_s", "resnet8", "--save_folder",
                            str(tmp_path / "save"), "--data_folder", str(tmp_path / "no_data")])
    assert stopped.value.code == 2
    assert list((tmp_path / "save" / "student" / "student_model").iterdir()) == []


def test_print_run_dir_reports_without_creating_anything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    teacher = write_published_teacher(tmp_path / "teachers", "resnet8", num_classes=10)
    save = tmp_path / "save"
    common = ["--save_folder", str(save), "--data_folder", str(tmp_path / "no_data"), "--print_run_dir"]
    assert train_student.main(["--path_t", str(teacher), "--model_s", "resnet8", "--distill", "crd", "-a", "1",
                               "--dataset", "digits", "--trial", "2", *common]) is None
    expected = save / "student" / "student_model" / "crd_digits_S_resnet8_T_resnet8_r_1_a_1_b_0.8_trial_2"
    assert capsys.readouterr().out == f"missing {expected}\n"
    train_teacher.main(["--model", "resnet20", "--trial", "1", *common])
    assert capsys.readouterr().out == f"missing {save / 'models' / 'resnet20_vanilla_trial_1'}\n"
    transfer_student.main(["--path_s", str(teacher), "--model_s", "resnet8", *common])
    expected = save / "transfer" / "transfer_model" / "transfer_stl10_S_resnet8_from_resnet8_vanilla_trial_0"
    assert capsys.readouterr().out == f"missing {expected}\n"
    assert not save.exists()
    with pytest.raises(SystemExit):  # flags are still checked
        train_student.main(["--path_t", str(teacher), "--model_s", "nope", *common])
    assert "Unknown --model_s 'nope'" in capsys.readouterr().err
