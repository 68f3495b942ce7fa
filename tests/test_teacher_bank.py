"""The teacher bank (dataset/teacher_bank.py): view numbering, entries equal to the teacher's
forward, resumable and verified builds, the --teacher_bank decision, and runs with the bank
training as runs without it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import dataset.teacher_bank as teacher_bank
import train_student
from dataset import make_loaders
from dataset.loaders import PADDING, VIEWS_PER_IMAGE, normalize, random_crop_flip
from dataset.teacher_bank import (BankSpec, bank_blocker, bank_is_locked, bank_lock, decide, open_or_build,
                                  view_ids, view_params)
from helper.errors import UserError
from helpers import assert_same_run, write_published_teacher
from models import model_dict

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def images(count: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def teacher(num_classes: int = 10) -> torch.nn.Module:
    torch.manual_seed(0)
    return model_dict["resnet8"](num_classes=num_classes).eval()


def spec(split: torch.Tensor, outputs: tuple[str, ...] = ("logits",)) -> BankSpec:
    return BankSpec("0123456789abcdef", "resnet8", "test", split.shape[0], teacher_bank.data_digest(split), 32, MEAN,
                    STD, outputs, 10, 64)


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
    loader.yield_view_ids = True
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (MEAN, STD))
    for batch, _, index in loader.iterate(2):
        samples, views = index[:, 0], index[:, 1]
        offsets, flips = view_params(views)
        assert torch.equal(batch, normalize(random_crop_flip(split[samples], offsets, flips), mean, std))


def test_bank_entries_equal_the_teachers_forward(tmp_path: Path) -> None:
    split, model = images(3), teacher()
    bank = open_or_build(tmp_path, spec(split, ("logits", "embedding")), model, split, torch.device("cpu"),
                         batch_size=100, progress=False)
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
        open_or_build(tmp_path, spec(split), model, split, torch.device("cpu"), progress=False)
    calls.clear()
    bank = open_or_build(tmp_path, spec(split), model, split, torch.device("cpu"), progress=False)
    assert len(calls) == 1  # only the third chunk was left
    monkeypatch.setattr(teacher_bank, "chunk_outputs", original)
    fresh = open_or_build(tmp_path / "again", spec(split), model, split, torch.device("cpu"), progress=False)
    assert torch.equal(bank.arrays["logits"], fresh.arrays["logits"])

    logits_file = bank.folder / "logits.npy"
    data = bytearray(logits_file.read_bytes())
    data[-5] ^= 0xFF
    logits_file.write_bytes(bytes(data))
    with pytest.raises(UserError, match="logits.npy' does not match its checksum.*Delete that folder"):
        open_or_build(tmp_path, spec(split), model, split, torch.device("cpu"), progress=False)
    logits_file.write_bytes(bytes(data[:-400]))
    with pytest.raises(UserError, match="damaged"):
        open_or_build(tmp_path, spec(split), model, split, torch.device("cpu"), progress=False)


def test_bank_of_other_weights_is_never_used(tmp_path: Path) -> None:
    split = images(2)
    bank = open_or_build(tmp_path, spec(split), teacher(), split, torch.device("cpu"), progress=False)
    other = teacher()
    with torch.no_grad():
        other.fc.bias += 1.0
    with pytest.raises(UserError, match="differ from the teacher's own outputs"):
        open_or_build(tmp_path, spec(split), other, split, torch.device("cpu"), progress=False)
    manifest = json.loads((bank.folder / "manifest.json").read_text())
    manifest["spec"]["mean"] = [0.0, 0.0, 0.0]
    (bank.folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="another teacher, dataset or normalization"):
        open_or_build(tmp_path, spec(split), teacher(), split, torch.device("cpu"), progress=False)


def test_lock_is_seen_while_held(tmp_path: Path) -> None:
    assert not bank_is_locked(tmp_path)
    with bank_lock(tmp_path):
        assert bank_is_locked(tmp_path)
    assert not bank_is_locked(tmp_path)


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
        open_or_build(tmp_path, spec(images(2)), teacher(), images(2), torch.device("cpu"), progress=False)


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


def test_run_status_shows_banks_being_built(tmp_path: Path) -> None:
    from scripts import run_status

    folder = tmp_path / "teacher_banks" / "resnet8_x"
    folder.mkdir(parents=True)
    manifest = {"spec": {"train_size": 10}, "chunk_images": 4, "checksums": {"logits": [1]}, "complete": False}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert run_status.bank_lines(tmp_path) == ["teacher bank resnet8_x: interrupted (continued by the next run), "
                                               "chunk 1 of 3 (33%)"]
    with bank_lock(folder):
        assert "building, chunk 1 of 3" in run_status.bank_lines(tmp_path)[0]
    (folder / "manifest.json").write_text(json.dumps({**manifest, "complete": True}))
    assert run_status.bank_lines(tmp_path) == []


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
