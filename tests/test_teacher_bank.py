"""The teacher bank (dataset/teacher_bank.py): view numbering, entries equal to the teacher's
forward, resumable and verified builds, the --teacher_bank decision, and runs with the bank
training as runs without it."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import dataset.teacher_bank as teacher_bank
from training import student as train_student
from dataset import make_loaders
from dataset.loaders import PADDING, VIEWS_PER_IMAGE, normalize, random_crop_flip
from dataset.teacher_bank import BankSpec, bank_blocker, decide, open_or_build, view_ids, view_params
from helper.errors import UserError
from helpers import assert_same_run, write_published_teacher
from models import model_dict

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def images(count: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def teacher(num_classes: int = 10) -> torch.nn.Module:
    torch.manual_seed(0)
    return model_dict["resnet8"](num_classes=num_classes).eval()


def spec(split: torch.Tensor, amp: str = "none") -> BankSpec:
    return BankSpec("0123456789abcdef", "resnet8", "test", split.shape[0], teacher_bank.data_digest(split), 32, MEAN,
                    STD, 10, 64, amp)


def build(root: Path, split: torch.Tensor, model: torch.nn.Module, outputs: tuple[str, ...] = ("logits",),
          amp: str = "none", **kwargs) -> teacher_bank.TeacherBank:
    return open_or_build(root, spec(split, amp), outputs, model, split, torch.device("cpu"), progress=False, **kwargs)


def test_view_numbers_cover_every_crop_and_flip_once() -> None:
    ids = torch.arange(VIEWS_PER_IMAGE)
    offsets, flips = view_params(ids)
    assert torch.equal(view_ids(offsets, flips), ids)
    assert {(int(r), int(c), bool(f)) for (r, c), f in zip(offsets, flips)} == \
        {(r, c, f) for r in range(2 * PADDING + 1) for c in range(2 * PADDING + 1) for f in (False, True)}


def test_loader_view_ids_reproduce_its_images() -> None:
    split = images(16)
    labels = torch.arange(16) % 10
    loader, _ = make_loaders(type("Data", (), {"train_images": split, "train_labels": labels, "test_images": split,
                                               "test_labels": labels, "mean": MEAN, "std": STD})(), 8, "cpu", seed=3)
    loader.with_view_ids()
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (MEAN, STD))
    for batch, _, index in loader.iterate(2):
        samples, views = index[:, 0], index[:, 1]
        offsets, flips = view_params(views)
        assert torch.equal(batch, normalize(random_crop_flip(split[samples], offsets, flips), mean, std))


def test_bank_entries_equal_the_teachers_forward(tmp_path: Path) -> None:
    split, model = images(3), teacher()
    bank = build(tmp_path, split, model, ("logits", "embedding"), batch_size=100)
    samples = torch.arange(3).repeat_interleave(VIEWS_PER_IMAGE)
    views = torch.arange(VIEWS_PER_IMAGE).repeat(3)
    offsets, flips = view_params(views)
    batch = normalize(random_crop_flip(split[samples], offsets, flips), *(torch.tensor(v).view(1, -1, 1, 1)
                                                                          for v in (MEAN, STD)))
    with torch.no_grad():
        feats, logits = model.double()(batch.double(), is_feat=True)
    found_logits, found_embedding = bank.lookup(samples, views)
    torch.testing.assert_close(found_logits.double(), logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(found_embedding.double(), feats[-1], rtol=1e-5, atol=1e-5)


def test_interrupted_build_continues_and_damage_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    split, model, calls = images(5), teacher(), []
    original = teacher_bank.chunk_outputs

    def interrupted_after_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise InterruptedError("stopped mid-build")
        return original(*args, **kwargs)

    monkeypatch.setattr(teacher_bank, "CHUNK_IMAGES", 2)
    monkeypatch.setattr(teacher_bank, "chunk_outputs", interrupted_after_two)
    with pytest.raises(InterruptedError):
        build(tmp_path, split, model)
    calls.clear()
    bank = build(tmp_path, split, model)
    assert len(calls) == 1  # only the third chunk was left
    monkeypatch.setattr(teacher_bank, "chunk_outputs", original)
    fresh = build(tmp_path / "again", split, model)
    assert torch.equal(bank.arrays["logits"], fresh.arrays["logits"])

    logits_file = bank.folder / "logits.npy"
    data = bytearray(logits_file.read_bytes())
    data[-5] ^= 0xFF
    logits_file.write_bytes(bytes(data))
    with pytest.raises(UserError, match="logits.npy' does not match its checksum.*Delete that folder"):
        build(tmp_path, split, model)
    logits_file.write_bytes(bytes(data[:-400]))
    with pytest.raises(UserError, match="damaged"):
        build(tmp_path, split, model)


def test_bank_of_other_weights_is_never_used(tmp_path: Path) -> None:
    split = images(2)
    bank = build(tmp_path, split, teacher())
    other = teacher()
    with torch.no_grad():
        other.fc.bias += 1.0
    with pytest.raises(UserError, match="differ from the teacher's own outputs"):
        build(tmp_path, split, other)
    manifest = json.loads((bank.folder / "logits.json").read_text())
    manifest["spec"]["mean"] = [0.0, 0.0, 0.0]
    (bank.folder / "logits.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="another teacher, dataset or normalization"):
        build(tmp_path, split, teacher())


def test_lock_is_seen_while_held(tmp_path: Path) -> None:
    """The build lock is helper/runlock.py's: its holder (this pid) is seen while held, and the lock
    file and the folder it created are gone after."""
    from helper.runlock import holder

    folder = tmp_path / "bank"
    assert holder(folder, "logits.lock") is None
    lock = teacher_bank.lock_output(folder, "logits")
    assert holder(folder, "logits.lock")["pid"] == os.getpid()
    lock.release()
    assert holder(folder, "logits.lock") is None and not folder.exists()


def test_decision_auto_on_off() -> None:
    assert bank_blocker("kd", "logits", ("weak",), "fast", "cifar100") is None
    assert "feature maps" in bank_blocker("fitnet", "maps", ("weak",), "fast", "cifar100")
    assert "strong" in bank_blocker("mlkd", "logits", ("weak", "strong"), "fast", "cifar100")
    assert "classic" in bank_blocker("kd", "logits", ("weak",), "classic", "cifar100")
    assert "RandomResizedCrop" in bank_blocker("kd", "logits", ("weak",), "fast", "imagenet")
    with pytest.raises(UserError, match="--teacher_bank on cannot apply: --loader classic"):
        decide("on", bank_blocker("kd", "logits", ("weak",), "classic", "cifar100"), 240, False)
    assert decide("auto", "maps", 240, False) == (False, None)
    assert decide("auto", None, 240, False) == (True, None)
    assert decide("auto", None, 2, True) == (True, None)
    use, why = decide("auto", None, 2, False)
    assert not use and "a 2-epoch run does not repay" in why
    assert decide("on", None, 2, False) == (True, None) and decide("off", None, 240, True) == (False, None)


def test_disk_without_room_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(teacher_bank.shutil, "disk_usage", lambda path: type("U", (), {"free": 10})())
    with pytest.raises(UserError, match="needs .* but the disk has"):
        build(tmp_path, images(2), teacher())


@pytest.mark.slow
@pytest.mark.parametrize("key", ["kd", "dkd", "ctkd", "crd", "rrd"])
def test_run_with_bank_trains_as_without(key: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Same seed, 2 epochs: every logged metric and the final weights as without the bank. The bank's
    entries come from the teacher's forward at another batch size, equal up to fp32 round-off
    (~1e-6 relative), which 2 epochs of SGD at lr 0.05 keep far below 1e-4."""
    from datagen import write_cifar100

    root = tmp_path_factory.getbasetemp() / "bank_runs"
    data = root / "data"
    if not data.exists():
        write_cifar100(data, n_train=48, n_test=16)
        write_published_teacher(root / "save", "resnet8")
    args = ["--path_t", str(root / "save" / "models" / "resnet8_vanilla" / "ckpt_epoch_240.pth"), "--distill", key,
            "--epochs", "2", "--lr_decay_epochs", "1", "--batch_size", "16", "--nce_k", "32", "--data_folder", str(data),
            "--save_folder", str(root / "save"), "--device", "cpu", "--no_progress", "--seed", "3", "--compile", "off"]
    train_student.main([*args, "--teacher_bank", "off", "--trial", "plain"])
    train_student.main([*args, "--teacher_bank", "on", "--trial", "bank"])
    runs = sorted((root / "save" / "student" / "student_model").glob(f"{key}_*"))
    assert [run.name.rsplit("_", 1)[-1] for run in runs] == ["bank", "plain"]
    assert_same_run(runs[1], runs[0], "resnet8", atol=1e-4)
    assert np.isfinite(np.loadtxt(runs[0] / "metrics.csv", delimiter=",", skiprows=1, usecols=4)).all()


def test_run_status_shows_banks_being_built(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Any build in progress (a plain training run's too: no sweep plan needed) with the pid holding
    its lock, an interrupted one, and a folder of the earlier layout; complete outputs say nothing."""
    from scripts import run_status

    folder = tmp_path / "teacher_banks" / "resnet8_x"
    folder.mkdir(parents=True)
    manifest = {"spec": {"train_size": 10}, "chunk_images": 4, "checksums": [1], "complete": False}
    (folder / "logits.json").write_text(json.dumps(manifest))
    assert run_status.bank_lines(tmp_path) == ["teacher bank resnet8_x/logits: interrupted (continued by the next run "
                                               "that reads it), chunk 1 of 3 (33%)"]
    lock = teacher_bank.lock_output(folder, "logits")
    try:
        assert run_status.bank_lines(tmp_path)[0].startswith(f"teacher bank resnet8_x/logits: building (pid "
                                                             f"{os.getpid()} on host ")
        assert run_status.main([str(tmp_path)]) == 0  # no sweep was started there: the bank lines alone
        assert "building (pid" in capsys.readouterr().out
        embedding = teacher_bank.lock_output(folder, "embedding")  # locked, no manifest written yet
        assert run_status.bank_lines(tmp_path)[1].endswith(", starting")
        embedding.release()
    finally:
        lock.release()
    (folder / "logits.json").write_text(json.dumps({**manifest, "complete": True}))
    assert run_status.bank_lines(tmp_path) == []
    (tmp_path / "teacher_banks" / "old").mkdir()
    (tmp_path / "teacher_banks" / "old" / "manifest.json").write_text("{}")
    assert run_status.bank_lines(tmp_path) == ["teacher bank old: earlier layout, read by no run (delete the folder)"]


def test_amp_bank_holds_what_the_amp_teacher_computes(tmp_path: Path) -> None:
    """Under --amp bf16 the bank is its own (another folder) and returns the teacher's bf16 outputs:
    equal to a bf16-autocast forward at another batch size (on this CPU bit for bit), where an fp32
    bank differs by the bf16 rounding."""
    split, model = images(2), teacher()
    bank = build(tmp_path, split, model, ("logits", "embedding"), amp="bf16")
    fp32_bank = build(tmp_path, split, model)
    assert bank.folder != fp32_bank.folder and bank.dtypes["logits"] == torch.bfloat16
    samples = torch.arange(2).repeat_interleave(VIEWS_PER_IMAGE)
    views = torch.arange(VIEWS_PER_IMAGE).repeat(2)
    offsets, flips = view_params(views)
    batch = normalize(random_crop_flip(split[samples], offsets, flips), *(torch.tensor(v).view(1, -1, 1, 1)
                                                                          for v in (MEAN, STD)))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = [model(batch[start:start + 27], is_feat=True) for start in range(0, batch.shape[0], 27)]
    logits = torch.cat([found for _, found in outputs])
    embedding = torch.cat([feats[-1] for feats, _ in outputs])
    found_logits, found_embedding = bank.lookup(samples, views)
    assert found_logits.dtype == logits.dtype == torch.bfloat16
    torch.testing.assert_close(found_logits, logits, rtol=0, atol=0)
    torch.testing.assert_close(found_embedding, embedding, rtol=0, atol=0)
    assert (fp32_bank.lookup(samples, views)[0] - logits.float()).abs().max() > 1e-4


def test_disk_filling_mid_build_stops_with_a_resumable_bank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Free space is checked before every chunk (a memory-mapped write to a full disk would kill the
    process with SIGBUS): a disk that fills mid-build stops it with a message, the finished chunks kept."""
    import errno

    split, model, calls, free = images(5), teacher(), [], iter([10**12] * 3)
    original_outputs, original_write = teacher_bank.chunk_outputs, teacher_bank.write_rows
    monkeypatch.setattr(teacher_bank, "CHUNK_IMAGES", 2)
    monkeypatch.setattr(teacher_bank, "free_bytes", lambda folder: next(free, 1000))  # full at the third chunk
    monkeypatch.setattr(teacher_bank, "chunk_outputs", lambda *args: calls.append(1) or original_outputs(*args))
    with pytest.raises(UserError, match=r"has 1000 B|has 1 KiB free, and the next chunk needs .*stopped after 2 "
                                        r"of 3 chunks, which are kept.*continues where it stopped"):
        build(tmp_path, split, model)
    monkeypatch.undo()
    monkeypatch.setattr(teacher_bank, "CHUNK_IMAGES", 2)
    monkeypatch.setattr(teacher_bank, "chunk_outputs", lambda *args: calls.append(1) or original_outputs(*args))
    calls.clear()
    bank = build(tmp_path, split, model)
    assert len(calls) == 1  # only the third chunk was left
    assert torch.equal(bank.arrays["logits"], build(tmp_path / "fresh", split, model).arrays["logits"])

    def no_space(path, offset, values, first):  # the disk fills between the check and the write
        if first >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        original_write(path, offset, values, first)

    monkeypatch.setattr(teacher_bank, "write_rows", no_space)
    with pytest.raises(UserError, match="stopped after 1 of 3 chunks, which are kept"):
        build(tmp_path / "enospc", split, model)
    manifest = json.loads(next((tmp_path / "enospc").glob("*/logits.json")).read_text())
    assert len(manifest["checksums"]) == 1 and not manifest["complete"]


def test_empty_or_short_bank_files_are_named_damaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    split, model = images(3), teacher()
    folder = build(tmp_path, split, model).folder
    for name, cut in (("logits.npy", 0), ("logits.npy", 100), ("logits.npy", 1000), ("logits.json", 0)):
        original = (folder / name).read_bytes()
        (folder / name).write_bytes(original[:cut])
        with pytest.raises(UserError, match=f"bank '{folder}' is damaged.*Delete that folder and rerun"):
            build(tmp_path, split, model)
        (folder / name).write_bytes(original)
    build(tmp_path, split, model)  # restored: opens again
    monkeypatch.setattr(teacher_bank, "CHUNK_IMAGES", 1)
    monkeypatch.setattr(teacher_bank, "chunk_outputs", lambda *args: (_ for _ in ()).throw(InterruptedError()))
    with pytest.raises(InterruptedError):
        build(tmp_path / "partial", split, model)
    next((tmp_path / "partial").glob("*/logits.npy")).write_bytes(b"")  # an interrupted build's file, emptied
    with pytest.raises(UserError, match="is damaged: '.*logits.npy' cannot be mapped"):
        build(tmp_path / "partial", split, model)


def test_stop_signal_during_build_keeps_the_finished_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    split, model, calls = images(5), teacher(), []
    original = teacher_bank.chunk_outputs

    def terminated_in_second(*args):
        calls.append(1)
        if calls == [1, 1]:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args)

    handler = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(teacher_bank, "CHUNK_IMAGES", 2)
    monkeypatch.setattr(teacher_bank, "chunk_outputs", terminated_in_second)
    with pytest.raises(teacher_bank.BuildStopped, match=r"stopped by SIGTERM; the finished chunks in .* are kept "
                                                        r"\(logits: 1 of 3 chunks\) and the next run") as stopped:
        build(tmp_path, split, model)
    assert stopped.value.exit_status == 143 and signal.getsignal(signal.SIGTERM) is handler
    calls[:] = [1, 1, 1]
    build(tmp_path, split, model)
    assert len(calls) == 5  # continued at the second chunk


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """train_student flags of a 1-epoch, 2-step run on 32 generated images (resnet8 -> resnet8)."""
    from datagen import write_cifar100

    root = tmp_path_factory.mktemp("bank_small")
    write_cifar100(root / "data", n_train=32, n_test=16)
    teacher_path = write_published_teacher(root / "teacher", "resnet8")
    return ["--path_t", str(teacher_path), "--epochs", "1", "--batch_size", "16", "--nce_k", "16", "--data_folder",
            str(root / "data"), "--device", "cpu", "--no_progress", "--seed", "3", "--compile", "off"]


def test_refusals_come_before_data_and_leave_no_folder(small_run: list[str], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    save = ["--save_folder", str(tmp_path / "save")]
    monkeypatch.setattr(train_student, "build_data", lambda *args, **kwargs: pytest.fail("data loaded"))
    for flags, message in ((["--teacher_bank", "on", "--loader", "classic"], "--teacher_bank on cannot apply"),
                           (["--build_teacher_bank", "--distill", "hint"], "--build_teacher_bank: this run reads "
                                                                             "no teacher bank: --distill hint")):
        with pytest.raises(SystemExit) as exited:
            train_student.main([*small_run, *save, *flags])
        assert exited.value.code == 2 and message in capsys.readouterr().err.replace("\n", " ")
    assert not (tmp_path / "save").exists()
    monkeypatch.undo()
    monkeypatch.setattr(train_student, "build_models", lambda *args: (_ for _ in ()).throw(UserError("late failure")))
    with pytest.raises(SystemExit):  # after run.json was written: the folder goes with it
        train_student.main([*small_run, *save])
    assert not any((tmp_path / "save" / "student" / "student_model").iterdir())


def test_ctrl_c_during_a_runs_build_ends_with_one_line(small_run: list[str], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    import signal

    def interrupted(*args):
        os.kill(os.getpid(), signal.SIGINT)
        return original(*args)

    original = teacher_bank.chunk_outputs
    monkeypatch.setattr(teacher_bank, "CHUNK_IMAGES", 16)
    monkeypatch.setattr(teacher_bank, "chunk_outputs", interrupted)
    with pytest.raises(SystemExit) as exited:
        train_student.main([*small_run, "--save_folder", str(tmp_path), "--teacher_bank", "on"])
    err = capsys.readouterr().err
    assert exited.value.code == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("teacher bank: stopped by SIGINT; the finished chunks in")
    assert "(logits: 0 of 2 chunks)" in err
    assert not any((tmp_path / "student" / "student_model").glob("*"))  # no run folder left


def test_kd_and_crd_banks_share_one_logits_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Logits are stored once per teacher and split; the embedding sits apart, built (alone) when a
    method that reads it first asks; a bank built for both at once computes them in one pass."""
    split, model, calls = images(3), teacher(), []
    original = teacher_bank.chunk_outputs
    monkeypatch.setattr(teacher_bank, "chunk_outputs", lambda *args: calls.append(args[2]) or original(*args))
    kd_bank = build(tmp_path / "a", split, model)
    logits_bytes = (kd_bank.folder / "logits.npy").read_bytes()
    crd_bank = build(tmp_path / "a", split, model, ("logits", "embedding"))
    assert calls == [("logits",), ("embedding",)] and crd_bank.folder == kd_bank.folder
    assert sorted(path.name for path in kd_bank.folder.iterdir()) == ["embedding.json", "embedding.npy",
                                                                       "logits.json", "logits.npy"]
    assert (kd_bank.folder / "logits.npy").read_bytes() == logits_bytes
    calls.clear()
    together = build(tmp_path / "b", split, model, ("logits", "embedding"))
    assert calls == [("logits", "embedding")]
    for name in ("logits", "embedding"):
        assert torch.equal(together.arrays[name], crd_bank.arrays[name])


def test_parallel_runs_build_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that finds the output locked waits for the builder, then reads its work (built once)."""
    import threading

    split, model, builders = images(2), teacher(), []
    original = teacher_bank.chunk_outputs
    monkeypatch.setattr(teacher_bank, "chunk_outputs",
                        lambda *args: builders.append(threading.get_ident()) or original(*args))
    folder = tmp_path / spec(split).folder_name
    lock = teacher_bank.lock_output(folder, "logits")  # as another process building it
    waiting = threading.Thread(target=lambda: builders.append(build(tmp_path, split, model)))
    waiting.start()
    teacher_bank.build(folder, spec(split), {"logits": None}, model, split, torch.device("cpu"), False, 64, False)
    lock.release()
    waiting.join(timeout=60)
    assert builders[:-1] == [threading.get_ident()]  # only this thread computed chunks
    assert isinstance(builders[-1], teacher_bank.TeacherBank)


@pytest.mark.slow
def test_amp_run_with_bank_trains_as_without(small_run: list[str], tmp_path: Path) -> None:
    """--amp bf16, 2 steps: the bank holds what the bf16 teacher computes, so the weights are those of
    the run without it (an fp32 bank differed by ~1e-4 here)."""
    for key in ("kd", "crd"):
        args = [*small_run, "--amp", "bf16", "--save_folder", str(tmp_path), "--distill", key]
        train_student.main([*args, "--teacher_bank", "off", "--trial", "plain"])
        train_student.main([*args, "--teacher_bank", "on", "--trial", "bank"])
        runs = sorted((tmp_path / "student" / "student_model").glob(f"{key}_*"))
        assert [run.name.rsplit("_", 1)[-1] for run in runs] == ["bank", "plain"]
        assert_same_run(runs[1], runs[0], "resnet8", atol=1e-6)


@pytest.mark.slow
def test_sweep_builds_the_bank_once_and_runs_read_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    from scripts import sweep
    from datagen import write_cifar100

    write_cifar100(tmp_path / "data", n_train=16, n_test=16)
    teacher = write_published_teacher(tmp_path / "save", "resnet8")
    common = ["--path_t", str(teacher), "--data_folder", str(tmp_path / "data"), "--save_folder",
              str(tmp_path / "save"), "--epochs", "1", "--batch_size", "8", "--device", "cpu", "--no_progress"]
    lines = ["\t".join(["train_student.py", *common, "--distill", key]) for key in ("kd", "dkd", "hint")]
    runs, errors = sweep.plan_runs(lines)
    assert not errors and [run.bank_job is not None for run in runs] == [True, True, False]
    assert runs[0].bank_job == runs[1].bank_job
    monkeypatch.setattr(sweep, "AUTO_BUILD_MIN_EPOCHS", 2)  # the two 1-epoch runs together repay it here
    sweep.build_teacher_banks(runs, sweep.make_workers("", None, 1)[0], "test")
    out = capsys.readouterr().out
    assert out.count("building the teacher bank that 2 run(s) read") == 1 and "teacher bank ready" in out
    train_student.main([*common, "--distill", "dkd"])  # auto: the bank exists, so it is read
    assert "teacher bank: on" in capsys.readouterr().out


def test_sweep_builds_what_its_runs_repay() -> None:
    """The embedding (with the logits, one pass) when its readers train 200+ epochs together; else the
    logits alone (through a logits-only run) when all the bank's readers do; else nothing."""
    from types import SimpleNamespace

    from scripts.sweep import bank_builder

    def run(outputs: tuple[str, ...], epochs: int) -> SimpleNamespace:
        return SimpleNamespace(bank_job=("key", outputs), plan=SimpleNamespace(epochs=epochs))

    kd, crd = ("logits",), ("logits", "embedding")
    group = [run(kd, 150), run(crd, 100), run(crd, 120)]
    assert bank_builder(group) == (group[1], 370)
    group = [run(crd, 30), run(kd, 150), run(kd, 60)]
    assert bank_builder(group) == (group[1], 240)
    assert bank_builder([run(kd, 150), run(crd, 30)]) == (None, 180)
