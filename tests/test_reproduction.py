"""reporting.reproduction: the t interval against scipy, the verdict at its boundaries, the match with
the recipe cells (like with like), the table of one recipe file, the heat map."""
from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest
from scipy import stats

import recipes
from helper import published_teachers
from helper.published_teachers import PublishedTeacher, add_to_record
from reporting import reproduction
from reporting.reproduction import (NO_COUNTERPART, Comparison, heat_maps, is_published_teacher, matching_cells,
                                    protocol_differences, t_interval, teacher_note, verdict)
from reporting.runs import Group, Run

PROTOCOL = {"epochs": 240, "batch_size": 64, "learning_rate": 0.05, "logit_stand": False, "kd_T": 4.0}
CRD_KD = recipes.find_cell("crd-cifar100/resnet32x4-resnet8x4/kd")
DIGEST = "3f2a9c0d1e4b5a67"
UNKNOWN = "teacher 3f2a9c0d unknown (not fetched by scripts/fetch_pretrained_teachers.sh)"
NO_DIGEST = "teacher file unknown (the run recorded no teacher digest)"


@pytest.fixture
def published_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """The table of published teachers knows DIGEST as resnet32x4's (and resnet56's) weights."""
    for arch in ("resnet32x4", "resnet56"):
        monkeypatch.setitem(published_teachers.PUBLISHED, arch, PublishedTeacher(weights_digest=DIGEST))


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


def differences(run: Run) -> list[str]:
    (cell, _), = matching_cells(run)
    return protocol_differences(run, cell)[0]


def test_the_published_protocol_has_no_differences(published_digest: None) -> None:
    assert differences(distill_run()) == []
    assert differences(distill_run("ShuffleV2", learning_rate=0.01)) == []
    assert differences(distill_run(method="crd", weights=(1, 1, 0.8))) == []  # CRD+KD


@pytest.mark.parametrize("run, expected", [
    (distill_run(epochs=1), ["epochs 1 (recipe 240)"]),
    (distill_run(batch_size=128, learning_rate=0.1), ["batch_size 128 (recipe 64)", "learning_rate 0.1 (recipe 0.05)"]),
    (distill_run("ShuffleV2"), ["learning_rate 0.05 (recipe 0.01)"]),
    (distill_run(weights=(1, 1, 0)), ["alpha 1 (recipe 0.9)", "gamma 1 (recipe 0.1)"]),
    (distill_run(logit_stand=True), ["logit_stand True (recipe False)"]),
    (distill_run(lr_decay_epochs=[150, 180, 210]), []),  # RepDistiller saved the list it parsed
    (distill_run(lr_decay_epochs="100,150"), ["lr_decay_epochs 100,150 (recipe 150,180,210)"]),
    (distill_run(teacher_dataset="cifar100"), []),  # its digest is the published one: the record is wrong
    (distill_run(recorded=False, teacher_path="save/models/resnet32x4_vanilla/ckpt_epoch_240.pth"), [NO_DIGEST]),
    (distill_run(recorded=False, teacher_path="save/models/resnet32x4_vanilla_trial_2/resnet32x4_best.pth"),
     [NO_DIGEST]),
    (distill_run(recorded=False), [NO_DIGEST]),
], ids=["epochs", "batch_and_lr", "small_lr_student", "weights", "logit_stand", "decay_list", "decay",
        "published_digest_wins", "no_digest_at_the_fetch_path", "no_digest_elsewhere", "no_teacher_path"])
def test_settings_that_differ_from_the_recipe_are_named(run: Run, expected: list[str],
                                                        published_digest: None) -> None:
    assert differences(run) == expected


def test_published_teacher_known_by_content_not_by_file_name(tmp_path: Path) -> None:
    """A teacher at the fetch script's path is not the published one until its weights digest is in the
    table or in the fetch record (of its save folder, or beside its file)."""
    fetch_path = tmp_path / "save" / "models" / "resnet32x4_vanilla" / "ckpt_epoch_240.pth"
    run = distill_run(path=tmp_path / "save" / "student" / "student_model" / "kd_run", teacher_path=str(fetch_path))
    assert is_published_teacher(run) is False
    assert teacher_note(run) == UNKNOWN and differences(run) == [UNKNOWN]
    assert teacher_note(distill_run(teacher_dataset="cifar100")) == "teacher 3f2a9c0d is not the published checkpoint"
    assert is_published_teacher(distill_run(recorded=False)) is None

    record = tmp_path / "save" / "models" / "published_teachers.json"
    record.parent.mkdir(parents=True)
    add_to_record(record, "resnet32x4", "0" * 16, "0" * 64, "https://mirror.example/t.tar", "loads")  # another file
    assert teacher_note(run) == UNKNOWN
    add_to_record(record, "resnet32x4", DIGEST, "1" * 64, "https://mirror.example/t.tar", "loads")
    assert is_published_teacher(run) is True and teacher_note(run) == "" and differences(run) == []
    moved = distill_run(path=tmp_path / "elsewhere" / "run", teacher_path=str(fetch_path))  # found beside the file
    assert is_published_teacher(moved) is True

    record.write_text("{not json")  # a damaged record confirms nothing
    assert teacher_note(run) == UNKNOWN


def test_the_table_of_published_teachers_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(published_teachers.PUBLISHED, "resnet32x4", PublishedTeacher(weights_digest="f" * 16))
    assert teacher_note(distill_run()) == "teacher 3f2a9c0d is not the published checkpoint"
    monkeypatch.setitem(published_teachers.PUBLISHED, "resnet32x4", PublishedTeacher(weights_digest=DIGEST))
    assert teacher_note(distill_run()) == ""


def test_each_run_meets_the_cell_of_its_method_pair_and_variant() -> None:
    assert [cell.published for cell, _ in matching_cells(distill_run())] == [73.33]
    assert [cell.name for cell, _ in matching_cells(distill_run(method="crd", weights=(1, 0, 0.8)))] == \
        ["crd-cifar100/resnet32x4-resnet8x4/crd"]
    assert [cell.published for cell, _ in matching_cells(distill_run(method="crd", weights=(1, 1, 0.8)))] == [75.46]
    assert matching_cells(distill_run(student="resnet8")) == []                      # no such pair
    assert matching_cells(distill_run(method="kdsvd", weights=(1, 0, 1))) == []     # no published numbers
    other = distill_run()
    other.dataset = "cifar10"
    assert matching_cells(other) == []


def dkd_run(beta: float, recipe: dict | None = None, **settings) -> Run:
    run = distill_run("resnet20", "dkd", (1, 0, 1), dkd_beta=beta, dkd_alpha=1.0, dkd_T=4.0, dkd_warmup=20,
                      **settings)
    run.teacher, run.recipe = "resnet56", recipe
    return run


def test_dkd_at_the_default_beta_is_no_counterpart_of_the_published_number(published_digest: None) -> None:
    group = Group([dkd_run(8.0), dkd_run(8.0)])
    group.runs[1].best_acc = group.runs[0].best_acc = 72.0
    (row,) = reproduction.student_comparisons([group])
    assert row.published == 71.97 and row.recipe == "dkd-cifar100/resnet56-resnet20/dkd"
    assert row.protocol == ["dkd_beta 8 (recipe 2)"] and row.verdict == NO_COUNTERPART
    assert "as published" not in reproduction.markdown_row(row)
    group = Group([dkd_run(2.0), dkd_run(2.0)])
    group.runs[0].best_acc, group.runs[1].best_acc = 71.0, 72.9
    (matched,) = reproduction.student_comparisons([group])
    assert matched.protocol == [] and matched.verdict == "consistent"
    assert reproduction.markdown_row(matched)[-2:] == ["as published", "dkd-cifar100/resnet56-resnet20/dkd"]


def test_a_recorded_recipe_chooses_the_cell() -> None:
    recipe = {"name": "dkd-cifar100/resnet56-resnet20/dkd", "departures": {"epochs": {"given": 2, "recipe": 240}}}
    (cell, found), = matching_cells(dkd_run(2.0, recipe, epochs=2))
    assert cell.name == recipe["name"] and found == ["epochs 2 (recipe 240)"]
    renamed = dkd_run(2.0, {"name": "dkd-cifar100/resnet56-resnet20/gone"})
    assert [cell.name for cell, found in matching_cells(renamed) if not found] == [recipe["name"]]


def test_table_report_lists_every_cell() -> None:
    group = Group([dkd_run(2.0)])
    group.runs[0].best_acc = group.runs[0].last_acc = 71.5
    rows = reproduction.table_report([group], "dkd-cifar100")
    assert len(rows) == len(recipes.load_table("dkd-cifar100").cells)
    assert rows[0].recipe == "dkd-cifar100/resnet56-resnet20/dkd" and rows[0].best == [71.5]
    assert {row.verdict for row in rows[1:]} == {"not run"}
    assert reproduction.table_report([group], "crd-cifar100")[0].verdict == "not run"


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


def recorded_dkd_run(save: Path, beta: float, trial: int, best: float, with_recipe: bool) -> None:
    """A finished dkd resnet56 -> resnet20 run folder as train_student.py leaves it: run.json, metrics.csv
    (2 epochs, the last one the best) and its last checkpoint, with --recipe or typed by hand."""
    import json

    import torch

    cell = recipes.find_cell("dkd-cifar100/resnet56-resnet20/dkd")
    settings = {**cell.expected(), "dkd_beta": beta, "seed": trial, "trial": str(trial)}
    record = {"format": 1, "script": "train_student", "settings": settings,
              "teacher": {"digest": "3f2a9c0d1e4b5a67", "arch": "resnet56", "dataset": None, "path": "t.pth"}}
    if with_recipe:
        departures = {} if beta == 2 else {"dkd_beta": {"given": beta, "recipe": 2.0}}
        record["recipe"] = {"name": cell.name, "teacher": "resnet56", "settings": cell.flags(),
                            "departures": departures}
    run_dir = save / "student" / "student_model" / f"dkd_cifar100_S_resnet20_T_resnet56_r_1_a_0_b_1_trial_{trial}"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps(record))
    (run_dir / "metrics.csv").write_text(f"epoch,test_acc1\n1,{best - 1}\n2,{best}\n")
    torch.save({"model": {}, "epoch": 2, "best_acc": best, "opt": {**settings, "epochs": 2}, "run": record,
                "model_t": "resnet56", "teacher_acc": 72.34, "stage": "main", "partial": None},
               run_dir / "resnet20_last.pth")


def test_a_save_tree_gives_the_table_of_one_recipe_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      published_digest: None) -> None:
    save = tmp_path / "save"
    for trial, best in ((1, 71.5), (2, 72.0), (3, 72.5)):  # the recipe: beta 2, trained with --recipe
        recorded_dkd_run(save, 2.0, trial, best, with_recipe=True)
    for trial, best in ((4, 70.0), (5, 70.4)):  # typed by hand at the default beta 8
        recorded_dkd_run(save, 8.0, trial, best, with_recipe=False)
    reproduction.main([str(save), "--table", "dkd-cifar100"])
    text = capsys.readouterr().out
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| cifar100 | ")]
    recipe_rows, beta8 = rows[0], rows[1]  # no teacher row: the DKD table gives no teacher accuracies
    assert recipe_rows[2:5] == ["DKD (dkd_beta=2)", "71.97", "72.00 ± 0.50 (3)"]
    assert recipe_rows[-3:] == ["consistent", "as published", "dkd-cifar100/resnet56-resnet20/dkd |"]
    assert beta8[2:5] == ["DKD (dkd_beta=8)", "71.97", "70.20 ± 0.28 (2)"]
    assert beta8[-3:] == [NO_COUNTERPART, "dkd_beta 8 (recipe 2)", "dkd-cifar100/resnet56-resnet20/dkd |"]
    others = rows[2:]
    assert len(others) == 10 and {row[-3] for row in others} == {"not run"}
    assert "| cifar100 | resnet32x4 -> resnet8x4 | DKD | 76.32 | - (0) |" in text


def test_a_recipe_not_checked_against_its_source_is_never_as_published(published_digest: None) -> None:
    """A group matching a cell marked checked = false: its verdict says so, and the row never reads
    'as published'."""
    unchecked = next(cell for cell in recipes.all_cells() if not cell.checked and "+" not in cell.method
                     and cell.teacher == "resnet32x4" and not cell.settings)
    run = distill_run(unchecked.student, unchecked.method, (1, 0, 1))
    run.gamma, run.alpha, run.beta = (unchecked.flags()[name] for name in ("gamma", "alpha", "beta"))
    run.settings = {**run.settings, **{key: value for key, value in unchecked.expected().items()
                                       if key not in ("dataset", "model_s", "distill")}}
    run.best_acc = run.last_acc = unchecked.published
    rows = [row for row in reproduction.student_comparisons([Group([run, run])]) if row.recipe == unchecked.name]
    assert len(rows) == 1 and rows[0].unchecked and not rows[0].departs
    cells = reproduction.markdown_row(rows[0])
    assert cells[-3].endswith("(recipe unchecked)") and cells[-2] == "as the recipe (not checked against its source)"
    assert reproduction.as_record(rows[0])["recipe_checked"] is False
