"""Exact resume, graceful stop, crash safety, NaN guard and safe checkpoint loading."""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from training import student as train_student
from helper.checkpoint import load_checkpoint, save_checkpoint
from helper.errors import UserError
from helpers import ROOT, assert_same_run, run_folder, train_straight_and_resumed, write_published_teacher

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_published_teacher(tmp_path_factory.mktemp("teacher_save"), "resnet8")


def student_argv(teacher: Path, data: Path, save: Path, key: str, epochs: int, *extra: str) -> list[str]:
    return ["--path_t", str(teacher), "--distill", key, "--model_s", "resnet8", "--epochs", str(epochs),
            "--init_epochs", "1", "--lr_decay_epochs", "1", "--data_folder", str(data), "--save_folder", str(save),
            "--nce_k", "128", "--device", "cpu", "--no_progress", "--print_freq", "3", "--seed", "5", *extra]


@pytest.mark.parametrize("key", ["kd", "crd", "rrd", "dcd", "abound", "ofd"])
def test_resume_is_bit_identical(key: str, teacher: Path, cifar_folder: Path, tmp_path: Path) -> None:
    assert_same_run(*train_straight_and_resumed(
        lambda save, *rest: student_argv(teacher, cifar_folder, save, key, *rest), tmp_path))


def _start(argv: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "train_student.py"), *argv], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def _wait_for(process: subprocess.Popen, text: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    for line in process.stdout:  # type: ignore[union-attr]
        if text in line:
            return
        assert time.time() < deadline, f"'{text}' not printed in time"
    raise AssertionError(f"process ended before printing '{text}': {process.stderr.read()}")  # type: ignore


def test_sigterm_mid_epoch_saves_and_resumes_exactly(teacher: Path, cifar_folder: Path, tmp_path: Path) -> None:
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    train_student.main(student_argv(teacher, cifar_folder, straight, "crd", 3, "--batch_size", "16"))
    process = _start(student_argv(teacher, cifar_folder, stopped, "crd", 3, "--batch_size", "16"), tmp_path)
    _wait_for(process, "epoch 1/3")
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert "--resume auto" in err and "Traceback" not in err
    state = load_checkpoint(run_folder(stopped) / "resnet8_last.pth")
    assert state["epoch"] >= 1
    train_student.main(student_argv(teacher, cifar_folder, stopped, "crd", 3, "--batch_size", "16",
                                    "--resume", "auto"))
    assert_same_run(run_folder(straight), run_folder(stopped))


def test_sigkill_leaves_loadable_checkpoint(teacher: Path, cifar_folder: Path, tmp_path: Path) -> None:
    argv = student_argv(teacher, cifar_folder, tmp_path / "save", "kd", 6, "--batch_size", "16", "--save_freq", "1")
    process = _start(argv, tmp_path)
    _wait_for(process, "epoch 1/6")
    time.sleep(float(torch.rand(()) * 1.5))  # somewhere in the next epoch, possibly mid-write
    process.kill()
    process.communicate()
    run_dir = run_folder(tmp_path / "save")
    state = load_checkpoint(run_dir / "resnet8_last.pth")
    assert state["epoch"] >= 1
    assert not list(run_dir.glob("*.tmp")) or all(p.name.startswith(".") for p in run_dir.glob("*.tmp"))
    train_student.main(argv + ["--resume", "auto"])
    assert load_checkpoint(run_dir / "resnet8_last.pth")["epoch"] == 6


def test_nan_loss_stops_with_clear_message(teacher: Path, cifar_folder: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    save = tmp_path / "save"
    train_student.main(student_argv(teacher, cifar_folder, save, "kd", 1))
    run_dir = run_folder(save)
    before = torch.load(run_dir / "resnet8_last.pth", weights_only=True)
    before["model"]["fc.weight"] *= 1e38  # a diverged state: the next epoch's logits overflow
    torch.save(before, run_dir / "resnet8_last.pth")
    with pytest.raises(SystemExit) as exit_info:
        train_student.main(student_argv(teacher, cifar_folder, save, "kd", 2, "--resume", "auto"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "became NaN or infinite" in err and "epoch 2" in err and "resnet8_last.pth" in err
    after = torch.load(run_dir / "resnet8_last.pth", weights_only=True)
    assert after["epoch"] == 1
    assert all(torch.equal(v, after["model"][k]) for k, v in before["model"].items())


def test_atomic_save_keeps_old_file_when_write_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ckpt.pth"
    save_checkpoint({"model": {"w": torch.ones(2)}, "epoch": 1}, path)

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint({"model": {"w": torch.zeros(2)}, "epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_atomic_writes_take_the_umask_mode(umask: int, tmp_path: Path) -> None:
    """Checkpoints, run.json, bank manifests, the teachers' fetch record and the data digest cache get
    0666 less the umask (as open() gives), not the 0600 of a private temp file: a save folder shared
    with others stays readable."""
    from dataset.digest import _write_cache, cache_path
    from dataset.teacher_bank import write_manifest
    from helper.provenance import write_run_record
    from helper.published_teachers import add_to_record

    previous = os.umask(umask)
    try:
        save_checkpoint({"model": {"w": torch.ones(2)}}, tmp_path / "ckpt.pth")
        write_run_record(tmp_path, {"settings": {}})
        write_manifest(tmp_path, "logits", {"checksums": []})
        add_to_record(tmp_path / "published_teachers.json", "resnet8", "0" * 16, "1" * 64, "test", "loads")
        _write_cache("cifar100", tmp_path, "stamp", {"train": "a", "test": "b"})
    finally:
        os.umask(previous)
    cache = cache_path("cifar100", tmp_path).name
    written = sorted(["ckpt.pth", "logits.json", "run.json", "published_teachers.json", cache])
    for name in written:
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert sorted(path.name for path in tmp_path.iterdir()) == written


def test_namespace_checkpoint_loads_through_allowlist_only(tmp_path: Path) -> None:
    legacy = tmp_path / "legacy.pth"
    torch.save({"model": {"w": torch.ones(1)}, "opt": argparse.Namespace(model="resnet8"), "epoch": 240}, legacy)
    assert load_checkpoint(legacy)["opt"].model == "resnet8"
    evil = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": Path("/tmp")}, evil)  # any other class is refused
    with pytest.raises(UserError, match="not a PyTorch checkpoint|corrupt"):
        load_checkpoint(evil)
