"""reporting.reproduction: the t interval against scipy, the verdict at its boundaries, the protocol
check, the heat map."""
from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest
from scipy import stats

from helper import published_teachers
from helper.published_teachers import PublishedTeacher, add_to_record
from reporting.reproduction import (Comparison, heat_maps, is_published_teacher, protocol_differences,
                                    published_student, t_interval, teacher_note, verdict)
from reporting.runs import Run

PROTOCOL = {"epochs": 240, "batch_size": 64, "learning_rate": 0.05, "logit_stand": False, "kd_T": 4.0}
DIGEST = "3f2a9c0d1e4b5a67"
UNKNOWN = "teacher 3f2a9c0d unknown (not fetched by scripts/fetch_pretrained_teachers.sh)"
NO_DIGEST = "teacher file unknown (the run recorded no teacher digest)"


@pytest.fixture
def published_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """The table of published teachers knows DIGEST as resnet32x4's weights."""
    monkeypatch.setitem(published_teachers.PUBLISHED, "resnet32x4", PublishedTeacher(weights_digest=DIGEST))


@pytest.mark.parametrize("values", [[73.0, 73.5, 74.5], [70.0, 71.0], [76.1, 75.8, 76.3, 75.9, 76.2], [5.0, 5.0]])
def test_t_interval_matches_scipy(values: list[float]) -> None:
    sem = statistics.stdev(values) / math.sqrt(len(values))
    expected = stats.t.interval(0.95, len(values) - 1, loc=statistics.fmean(values), scale=sem) if sem else \
        (values[0], values[0])
    assert t_interval(values) == pytest.approx(expected, abs=1e-12)
    low, high = t_interval(values, confidence=0.99)
    assert high - low >= t_interval(values)[1] - t_interval(values)[0]


def test_no_interval_for_one_trial() -> None:
    assert t_interval([73.0]) is None and t_interval([]) is None
    assert verdict(73.33, None) == "n too small"


def test_verdict_at_the_interval_boundaries() -> None:
    low, high = t_interval([73.0, 73.5, 74.5])
    assert verdict(low, (low, high)) == "consistent" and verdict(high, (low, high)) == "consistent"
    assert verdict((low + high) / 2, (low, high)) == "consistent"
    assert verdict(math.nextafter(low, -math.inf), (low, high)) == "ours higher"
    assert verdict(math.nextafter(high, math.inf), (low, high)) == "ours lower"


def distill_run(student: str = "resnet8x4", method: str = "kd", weights: tuple = (0.1, 0.9, 0.0),
                recorded: bool = True, teacher_dataset: str | None = None, teacher_path: str | None = None,
                path: Path = Path("run"), **settings) -> Run:
    return Run(kind="student", path=path, dataset="cifar100", teacher="resnet32x4", student=student,
               method=method, gamma=weights[0], alpha=weights[1], beta=weights[2], recorded=recorded,
               settings={**PROTOCOL, **settings}, teacher_digest=DIGEST if recorded else None,
               teacher_dataset=teacher_dataset, teacher_path=teacher_path)


def test_the_published_protocol_has_no_differences(published_digest: None) -> None:
    assert protocol_differences(distill_run()) == []
    assert protocol_differences(distill_run("MobileNetV2", learning_rate=0.01)) == []
    assert protocol_differences(distill_run(method="crd", weights=(1, 1, 0.8))) == []  # CRD+KD


@pytest.mark.parametrize("run, expected", [
    (distill_run(epochs=1), ["epochs 1 (published 240)"]),
    (distill_run(batch_size=128, learning_rate=0.1), ["batch_size 128 (published 64)",
                                                       "learning_rate 0.1 (published 0.05)"]),
    (distill_run("ShuffleV2"), ["learning_rate 0.05 (published 0.01)"]),
    (distill_run(weights=(1, 1, 0)), ["weights -r 1 -a 1 -b 0 (not the method's defaults)"]),
    (distill_run(logit_stand=True), ["--logit_stand"]),
    (distill_run(teacher_dataset="cifar100"), []),  # its digest is the published one: the record is wrong
    (distill_run(recorded=False, teacher_path="save/models/resnet32x4_vanilla/ckpt_epoch_240.pth"), [NO_DIGEST]),
    (distill_run(recorded=False, teacher_path="save/models/resnet32x4_vanilla_trial_2/resnet32x4_best.pth"),
     [NO_DIGEST]),
    (distill_run(recorded=False), [NO_DIGEST]),
], ids=["epochs", "batch_and_lr", "small_lr_student", "weights", "logit_stand", "published_digest_wins",
        "no_digest_at_the_fetch_path", "no_digest_elsewhere", "no_teacher_path"])
def test_settings_that_differ_from_the_protocol_are_named(run: Run, expected: list[str],
                                                          published_digest: None) -> None:
    assert protocol_differences(run) == expected


def test_published_teacher_known_by_content_not_by_file_name(tmp_path: Path) -> None:
    """A teacher at the fetch script's path is not the published one until its weights digest is in the
    table or in the fetch record (of its save folder, or beside its file)."""
    fetch_path = tmp_path / "save" / "models" / "resnet32x4_vanilla" / "ckpt_epoch_240.pth"
    run = distill_run(path=tmp_path / "save" / "student" / "student_model" / "kd_run", teacher_path=str(fetch_path))
    assert is_published_teacher(run) is False
    assert teacher_note(run) == UNKNOWN and protocol_differences(run) == [UNKNOWN]
    assert teacher_note(distill_run(teacher_dataset="cifar100")) == "teacher 3f2a9c0d is not the published checkpoint"
    assert is_published_teacher(distill_run(recorded=False)) is None

    record = tmp_path / "save" / "models" / "published_teachers.json"
    record.parent.mkdir(parents=True)
    add_to_record(record, "resnet32x4", "0" * 16, "0" * 64, "https://mirror.example/t.tar", "loads")  # another file
    assert teacher_note(run) == UNKNOWN
    add_to_record(record, "resnet32x4", DIGEST, "1" * 64, "https://mirror.example/t.tar", "loads")
    assert is_published_teacher(run) is True and teacher_note(run) == "" and protocol_differences(run) == []
    moved = distill_run(path=tmp_path / "elsewhere" / "run", teacher_path=str(fetch_path))  # found beside the file
    assert is_published_teacher(moved) is True

    record.write_text("{not json")  # a damaged record confirms nothing
    assert teacher_note(run) == UNKNOWN


def test_the_table_of_published_teachers_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(published_teachers.PUBLISHED, "resnet32x4", PublishedTeacher(weights_digest="f" * 16))
    assert teacher_note(distill_run()) == "teacher 3f2a9c0d is not the published checkpoint"
    monkeypatch.setitem(published_teachers.PUBLISHED, "resnet32x4", PublishedTeacher(weights_digest=DIGEST))
    assert teacher_note(distill_run()) == ""


def test_published_numbers_per_method_pair_and_variant() -> None:
    assert published_student(distill_run()) == 73.33
    assert published_student(distill_run(method="crd", weights=(1, 0, 0.8))) == 75.51
    assert published_student(distill_run(method="crd", weights=(1, 1, 0.8))) == 75.46  # the +KD row
    assert published_student(distill_run(student="resnet8")) is None                   # no such pair
    assert published_student(distill_run(method="kdsvd", weights=(1, 0, 1))) is None  # no published numbers
    other = distill_run()
    other.dataset = "cifar10"
    assert published_student(other) is None


def test_heat_map_is_written_and_readable(tmp_path: Path) -> None:
    import matplotlib.image

    rows = [Comparison("cifar100", "resnet32x4 -> resnet8x4", "KD", 73.33, [73.0, 74.0, 75.0], [73.0, 74.0, 75.0]),
            Comparison("cifar100", "resnet32x4 -> resnet8x4", "DKD", 76.32, [75.0, 75.5], [75.0, 75.5], ["epochs 3"]),
            Comparison("cifar100", "resnet56 -> resnet20", "KD", 70.66, [71.0], [71.0]),
            Comparison("cifar100", "resnet32x4", "teacher (used)", 79.42, [79.42], [])]
    (path,) = heat_maps(rows, tmp_path / "plots")
    assert path == tmp_path / "plots" / "reproduction_cifar100.png"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 200
    assert image[..., :3].std() > 0.05  # not blank
    assert heat_maps(rows[3:], tmp_path / "none") == []  # teachers only: no map
