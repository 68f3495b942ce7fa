"""reporting.summary on synthetic run folders with known numbers."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from scipy import stats

from helper.provenance import weights_digest
from helper.published_teachers import RECORD_FILE, add_to_record
from reporting.runs import Group, group_runs, scan
from reporting.summary import main, pivot, summarize

COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "test_acc1", "test_acc5", "test_loss", "best_acc",
           "epoch_seconds", "ce", "kl"]


def write_metrics(run_dir: Path, accuracies: list[float], extra_loss: str | None = None) -> None:
    """metrics.csv in the loop's format, test_acc1 = ``accuracies`` (one row per epoch)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    columns = COLUMNS + ([extra_loss] if extra_loss else [])
    with open(run_dir / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        best = 0.0
        for epoch, accuracy in enumerate(accuracies, 1):
            best = max(best, accuracy)
            row = {"epoch": epoch, "lr": 0.05, "train_loss": 3.0 / epoch, "train_acc": accuracy + 5,
                   "test_acc1": accuracy, "test_acc5": accuracy + 20, "test_loss": 2.0 / epoch, "best_acc": best,
                   "epoch_seconds": 1.5, "ce": 2.5 / epoch, "kl": 0.5 / epoch}
            if extra_loss:
                row[extra_loss] = 1.0 / epoch
            writer.writerow(row)


def student_run(save: Path, distill: str, model_s: str, model_t: str, r: float, a: float, b: float, trial: int,
                accuracies: list[float], planned: int | None = None, checkpoint: bool = True,
                teacher_acc: float = 79.42) -> Path:
    """A student run folder as train_student.py leaves it (metrics + last checkpoint)."""
    name = f"{distill}_cifar100_S_{model_s}_T_{model_t}_r_{r:g}_a_{a:g}_b_{b:g}_trial_{trial}"
    run_dir = save / "student" / "student_model" / name
    write_metrics(run_dir, accuracies, extra_loss=None if distill == "kd" else distill)
    if checkpoint:
        opt = {"distill": distill, "model_s": model_s, "dataset": "cifar100", "gamma": r, "alpha": a, "beta": b,
               "trial": str(trial), "epochs": planned or len(accuracies)}
        torch.save({"model": {}, "epoch": len(accuracies), "accuracy": accuracies[-1], "best_acc": max(accuracies),
                    "arch": model_s, "opt": opt, "model_t": model_t, "teacher_acc": teacher_acc, "stage": "main",
                    "partial": None}, run_dir / f"{model_s}_last.pth")
    return run_dir


def vanilla_run(save: Path, model: str, trial: int, accuracies: list[float]) -> None:
    run_dir = save / "models" / f"{model}_vanilla_trial_{trial}"
    write_metrics(run_dir, accuracies)
    opt = {"model": model, "dataset": "cifar100", "trial": str(trial), "epochs": len(accuracies)}
    torch.save({"model": {}, "epoch": len(accuracies), "accuracy": accuracies[-1], "best_acc": max(accuracies),
                "arch": model, "opt": opt, "stage": "main", "partial": None}, run_dir / f"{model}_last.pth")


@pytest.fixture(scope="module")
def save(tmp_path_factory: pytest.TempPathFactory) -> Path:
    save = tmp_path_factory.mktemp("save")
    # KD, three trials: best 73.0/73.5/74.5, last 72.5/73.0/74.0
    for trial, best in enumerate([73.0, 73.5, 74.5], 1):
        student_run(save, "kd", "resnet8x4", "resnet32x4", 0.1, 0.9, 0, trial, [best - 1, best, best - 0.5])
    # DCD: one finished trial and one stopped at epoch 2 of 3
    student_run(save, "dcd", "resnet8x4", "resnet32x4", 1, 0, 1, 1, [70.0, 74.0, 73.0])
    student_run(save, "dcd", "resnet8x4", "resnet32x4", 1, 0, 1, 2, [71.0, 74.5], planned=3)
    # CRD+KD, one trial; RRD without a checkpoint (folder name + metrics only)
    student_run(save, "crd", "resnet8x4", "resnet32x4", 1, 1, 0.8, 1, [74.0, 75.0, 74.75])
    student_run(save, "rrd", "resnet8x4", "resnet32x4", 1, 0, 1, 1, [72.0, 74.0], checkpoint=False)
    # KD with non-paper weights gets its own column
    student_run(save, "kd", "resnet8x4", "resnet32x4", 1, 1, 0, 1, [60.0, 61.0])
    # a second pair, which the CRD table lists first
    student_run(save, "kd", "resnet20", "resnet56", 0.1, 0.9, 0, 1, [69.0, 70.5], teacher_acc=72.34)
    # vanilla students (S column) and a published teacher checkpoint (no options, no metrics)
    vanilla_run(save, "resnet8x4", 1, [70.0, 72.0])
    vanilla_run(save, "resnet8x4", 2, [71.0, 73.5])
    published = save / "models" / "resnet32x4_vanilla"
    published.mkdir(parents=True)
    torch.save({"model": {}, "epoch": 240, "accuracy": torch.tensor(79.42)}, published / "ckpt_epoch_240.pth")
    # a transfer run of a DCD+KD wrn_40_2 -> wrn_16_2 student
    source_run = "dcd_cifar100_S_wrn_16_2_T_wrn_40_2_r_1_a_1_b_1_trial_1"
    source = save / "student" / "elsewhere" / source_run / "wrn_16_2_best.pth"
    transfer = save / "transfer" / "transfer_model" / f"transfer_stl10_S_wrn_16_2_from_{source_run}_trial_1"
    write_metrics(transfer, [60.0, 72.5, 72.0])
    torch.save({"model": {}, "epoch": 3, "accuracy": 72.0, "best_acc": 72.5, "stage": "main",
                "opt": {"path_s": str(source), "model_s": "wrn_16_2", "dataset": "stl10", "trial": "1", "epochs": 3}},
               transfer / "wrn_16_2_last.pth")
    return save


@pytest.fixture(scope="module")
def outputs(save: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, list[dict[str, str]]]:
    out = tmp_path_factory.mktemp("out")
    text, written = summarize(save, out, "both", make_plots=True)
    with open(out / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return out, text, rows


def _row(rows: list[dict[str, str]], **match: str) -> dict[str, str]:
    found = [row for row in rows if all(row[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, found)
    return found[0]


def test_csv_mean_and_sample_std_over_trials(outputs) -> None:
    _, _, rows = outputs
    kd = _row(rows, kind="student", teacher="resnet32x4", method="KD")
    assert kd["trials"] == "3" and kd["trial_ids"] == "1 2 3"
    assert (kd["gamma"], kd["alpha"], kd["beta"]) == ("0.1", "0.9", "0")
    assert kd["best_acc_mean"] == "73.6667" and kd["best_acc_std"] == "0.7638"  # stdev([73, 73.5, 74.5])
    assert kd["last_acc_mean"] == "73.1667" and kd["last_acc_std"] == "0.7638"
    assert kd["epochs_done"] == "3" and kd["epochs_planned"] == "3" and kd["unfinished"] == "0"
    assert kd["teacher_acc"] == "79.4200"
    crd = _row(rows, method="CRD+KD")
    assert crd["distill"] == "crd" and crd["trials"] == "1"
    assert crd["best_acc_mean"] == "75.0000" and crd["best_acc_std"] == "" and crd["last_acc_mean"] == "74.7500"


def test_unfinished_run_is_listed_apart(outputs) -> None:
    _, text, rows = outputs
    finished = _row(rows, method="DCD", listed_apart="")
    assert finished["trials"] == "1" and finished["trial_ids"] == "1" and finished["best_acc_mean"] == "74.0000"
    unfinished = _row(rows, method="DCD", unfinished="1")
    assert unfinished["trial_ids"] == "2" and unfinished["listed_apart"] == "unfinished (2/3 epochs)"
    assert unfinished["epochs_done"] == "2" and unfinished["epochs_planned"] == "3"
    apart = text[text.index("## Listed apart"):]
    assert "| student | cifar100 | resnet32x4 (79.42) | resnet8x4 | DCD | 2 | 74.50 | 74.50 | 2/3 | unfinished " \
           "(2/3 epochs) |" in apart


def test_run_without_checkpoint_is_read_from_its_folder_name(outputs) -> None:
    _, text, rows = outputs
    rrd = _row(rows, method="RRD")
    assert (rrd["teacher"], rrd["student"], rrd["beta"], rrd["trials"]) == ("resnet32x4", "resnet8x4", "1", "1")
    assert rrd["best_acc_mean"] == "74.0000" and rrd["epochs_planned"] == ""
    assert "| 2/? |" in next(line for line in text.splitlines() if "| resnet8x4 | RRD |" in line)


def test_markdown_single_trial_has_dash_for_std(outputs) -> None:
    _, text, _ = outputs
    line = next(line for line in text.splitlines() if "| resnet8x4 | CRD+KD |" in line)
    assert line == "| cifar100 | resnet32x4 (79.42) | resnet8x4 | CRD+KD | 1 | 1 | 0.8 | 1 | 75.00 | - | 74.75 | - | 3/3 |"
    assert "what the CRD/DCD/RRD papers report" in text


def test_pivot_table_in_paper_layout(outputs) -> None:
    _, text, _ = outputs
    lines = text.splitlines()
    start = lines.index("| teacher -> student | T | S | KD | CRD+KD | RRD | DCD | KD (r=1,a=1,b=0) |")
    assert lines[start + 2] == "| resnet56 -> resnet20 | 72.34 | - | 70.50 | - | - | - | - |"
    assert lines[start + 3] == "| resnet32x4 -> resnet8x4 | 79.42 | 72.75 | 73.67 | 75.00 | 74.00 | 74.00 | 61.00 |"
    assert lines[start + 4] == ""


def test_vanilla_and_published_and_transfer_groups(outputs) -> None:
    _, _, rows = outputs
    vanilla = _row(rows, kind="vanilla", student="resnet8x4")
    assert vanilla["method"] == "vanilla" and vanilla["best_acc_mean"] == "72.7500"
    assert vanilla["best_acc_std"] == "1.0607" and vanilla["last_acc_mean"] == "72.7500"
    published = _row(rows, kind="vanilla", student="resnet32x4")
    assert published["method"] == "published" and published["best_acc_mean"] == "79.4200"
    assert published["epochs_done"] == "240" and published["unfinished"] == "0"
    transfer = _row(rows, kind="transfer")
    assert (transfer["dataset"], transfer["teacher"], transfer["student"]) == ("stl10", "wrn_40_2", "wrn_16_2")
    assert transfer["method"] == "DCD+KD" and transfer["best_acc_mean"] == "72.5000"
    assert transfer["last_acc_mean"] == "72.0000"


def test_plot_writes_pngs(outputs) -> None:
    out, _, _ = outputs
    plots = sorted(path.name for path in (out / "plots").glob("*.png"))
    for expected in ("cifar100_resnet32x4_to_resnet8x4_acc.png", "cifar100_resnet32x4_to_resnet8x4_losses.png",
                     "cifar100_resnet56_to_resnet20_acc.png", "cifar100_vanilla_acc.png",
                     "transfer_stl10_wrn_16_2_acc.png"):
        assert expected in plots, plots
        assert (out / "plots" / expected).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_formats_and_errors(save: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main([str(save), "--out", str(tmp_path / "csv_only"), "--format", "csv"])
    assert sorted(p.name for p in (tmp_path / "csv_only").iterdir()) == ["reproduction.csv", "summary.csv"]
    assert "| DCD |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    assert "does not exist" in " ".join(capsys.readouterr().err.split())  # wrapped at 100 columns
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "empty")])
    assert "No runs found" in " ".join(capsys.readouterr().err.split())


# ---------------------------------------------------------------------------------------------------
# grouping by the recorded settings (run.json) and, for older runs, by the checkpoint's options

TEACHER_A, TEACHER_B = "a1" * 8, "b2" * 8


WEIGHTS = {"kd": (0.1, 0.9, 0.0), "dkd": (1.0, 0.0, 1.0)}


def kd_run(save: Path, trial: int, accuracies: list[float], recorded: bool = True, teacher: str = TEACHER_A,
           teacher_acc: float = 79.42, saved: dict | None = None, planned: int | None = None, distill: str = "kd",
           **changes) -> Path:
    """A KD (or ``distill``) resnet32x4 -> resnet8x4 run; ``changes`` override its settings. ``recorded``:
    with run.json and a 'run' entry in the checkpoint (``saved``: other settings in that entry); else the
    checkpoint's options only, as runs from before the run record."""
    gamma, alpha, beta = WEIGHTS[distill]
    settings = {"distill": distill, "dataset": "cifar100", "model_s": "resnet8x4", "gamma": gamma, "alpha": alpha,
                "beta": beta, "kd_T": 4.0, "dkd_beta": 8.0, "logit_stand": False, "epochs": planned or len(accuracies),
                "learning_rate": 0.05, "batch_size": 64, "seed": trial, "trial": str(trial), **changes}
    run_dir = student_run(save, distill, "resnet8x4", "resnet32x4", gamma, alpha, beta, trial, accuracies,
                          planned=planned, teacher_acc=teacher_acc)
    checkpoint = run_dir / "resnet8x4_last.pth"
    state = torch.load(checkpoint, weights_only=True)
    if recorded:
        teacher_entry = {"path": f"save/models/resnet32x4_{teacher[:4]}/ckpt_epoch_240.pth", "digest": teacher,
                         "arch": "resnet32x4", "dataset": None, "num_classes": 100, "accuracy": teacher_acc}
        record = {"format": 1, "script": "train_student", "settings": settings, "teacher": teacher_entry,
                  "data": {"train": 50000, "test": 10000, "num_classes": 100}, "code_version": "unknown"}
        (run_dir / "run.json").write_text(json.dumps(record))
        state["run"] = {**record, "settings": {**settings, **(saved or {})}}
    else:  # the options a run saves hold paths and speed switches too: they must not split a group
        state["opt"] = {**settings, "model_t": "resnet32x4", "save_folder": f"/scratch/{trial}", "num_workers": trial,
                        "path_t": f"teacher_{trial}.pth", "print_freq": 10 * trial}
    torch.save(state, checkpoint)
    return run_dir


def kd_groups(save: Path) -> list[Group]:
    return [group for group in group_runs(scan(save)) if group.first.kind == "student"]


def test_runs_of_different_teachers_are_not_averaged(tmp_path: Path) -> None:
    for trial, (teacher, accuracy) in enumerate([(TEACHER_A, 26.0), (TEACHER_A, 26.0), (TEACHER_B, 98.0)], 1):
        kd_run(tmp_path, trial, [50.0 + trial], teacher=teacher, teacher_acc=accuracy)
    first, second = kd_groups(tmp_path)
    assert [r.trial for r in first.runs] == ["1", "2"] and [r.trial for r in second.runs] == ["3"]
    assert (first.teacher_cell, second.teacher_cell) == ("resnet32x4 a1a1a1a1 (26.00)", "resnet32x4 b2b2b2b2 (98.00)")
    header, rows = pivot(group_runs(scan(tmp_path)), "cifar100")
    assert header[3:] == ["KD"]
    assert rows == [["resnet32x4 a1a1a1a1 -> resnet8x4", "26.00", "-", "51.50"],
                    ["resnet32x4 b2b2b2b2 -> resnet8x4", "98.00", "-", "53.00"]]


def test_runs_without_a_record_of_different_teachers_are_not_averaged(tmp_path: Path) -> None:
    for trial, accuracy in enumerate([26.0, 98.0], 1):
        kd_run(tmp_path, trial, [50.0 + trial], recorded=False, teacher_acc=accuracy)
    groups = kd_groups(tmp_path)
    assert [(g.distinct, len(g.runs)) for g in groups] == [("teacher accuracy=26", 1), ("teacher accuracy=98", 1)]
    _, rows = pivot(group_runs(scan(tmp_path)), "cifar100")
    assert rows == [["resnet32x4 -> resnet8x4", "26.00 / 98.00", "-", "51.00", "52.00"]]


@pytest.mark.parametrize("recorded", [True, False], ids=["run_record", "checkpoint_options"])
def test_one_epoch_and_three_epoch_runs_are_split(tmp_path: Path, recorded: bool) -> None:
    kd_run(tmp_path, 1, [60.0], recorded=recorded)
    kd_run(tmp_path, 2, [61.0], recorded=recorded)
    kd_run(tmp_path, 3, [60.0, 70.0, 72.0], recorded=recorded)
    one, three = sorted(kd_groups(tmp_path), key=lambda g: len(g.runs[0].rows))
    assert (one.distinct, [r.trial for r in one.runs], one.mean_std("best_acc")[0]) == ("epochs=1", ["1", "2"], 60.5)
    assert (three.distinct, [r.trial for r in three.runs]) == ("epochs=3", ["3"])
    assert (one.column, three.column) == ("KD (epochs=1)", "KD (epochs=3)")
    text, _ = summarize(tmp_path, tmp_path / "out", "csv")
    teacher = "resnet32x4 a1a1a1a1 (79.42)" if recorded else "resnet32x4 (79.42)"
    assert f"| cifar100 | {teacher} | resnet8x4 | KD (epochs=1) | 0.1 | 0.9 | 0 | 2 | 60.50 |" in text
    with open(tmp_path / "out" / "summary.csv", newline="") as handle:
        assert sorted(row["settings"] for row in csv.DictReader(handle)) == ["epochs=1", "epochs=3"]


@pytest.mark.parametrize("recorded", [True, False], ids=["run_record", "checkpoint_options"])
@pytest.mark.parametrize("distill, changes, suffix", [
    ("kd", {"kd_T": 2.0}, "kd_T=2"), ("dkd", {"dkd_beta": 6.0}, "dkd_beta=6"),
    ("kd", {"logit_stand": True}, "logit_stand=True"),
    ("kd", {"learning_rate": 0.01, "kd_T": 2.0}, "kd_T=2, learning_rate=0.01")])
def test_a_flag_not_in_the_folder_name_splits(tmp_path: Path, recorded: bool, distill: str, changes: dict,
                                              suffix: str) -> None:
    kd_run(tmp_path, 1, [60.0], recorded=recorded, distill=distill)
    kd_run(tmp_path, 2, [62.0], recorded=recorded, distill=distill)  # another seed and trial: pooled
    kd_run(tmp_path, 3, [70.0], recorded=recorded, distill=distill, **changes)
    default, changed = sorted(kd_groups(tmp_path), key=lambda g: len(g.runs), reverse=True)
    assert [r.trial for r in default.runs] == ["1", "2"] and [r.trial for r in changed.runs] == ["3"]
    label = "KD" if distill == "kd" else "DKD"
    assert changed.distinct == suffix and changed.column == f"{label} ({suffix})"
    assert default.distinct == suffix.replace("kd_T=2", "kd_T=4").replace("dkd_beta=6", "dkd_beta=8").replace(
        "logit_stand=True", "logit_stand=False").replace("learning_rate=0.01", "learning_rate=0.05")


def test_another_methods_flag_does_not_split_runs_without_a_record(tmp_path: Path) -> None:
    kd_run(tmp_path, 1, [60.0], recorded=False)
    kd_run(tmp_path, 2, [62.0], recorded=False, dkd_beta=6.0)  # saved in the options, unused by KD
    (group,) = kd_groups(tmp_path)
    assert [r.trial for r in group.runs] == ["1", "2"] and group.distinct == ""


def test_unfinished_and_resumed_with_other_settings_are_listed_apart(tmp_path: Path) -> None:
    kd_run(tmp_path, 1, [60.0, 70.0, 72.0])
    kd_run(tmp_path, 2, [61.0, 71.0, 73.0])
    kd_run(tmp_path, 3, [62.0, 72.0, 74.0], saved={"epochs": 1})  # its checkpoint was trained for 1 epoch
    kd_run(tmp_path, 4, [63.0], planned=3)                         # stopped after 1 of 3 epochs
    groups = kd_groups(tmp_path)
    averaged = [g for g in groups if not g.apart]
    assert len(averaged) == 1 and [r.trial for r in averaged[0].runs] == ["1", "2"]
    assert averaged[0].distinct == "" and averaged[0].mean_std("best_acc")[0] == 72.5
    apart = {g.first.trial: g.apart for g in groups if g.apart}
    assert apart == {"3": "resumed with different settings (epochs 1 -> 3)", "4": "unfinished (1/3 epochs)"}
    text, _ = summarize(tmp_path, tmp_path / "out", "md")
    listed = text[text.index("## Listed apart"):].splitlines()
    assert listed[4].startswith("| student | cifar100 | resnet32x4 a1a1a1a1 (79.42) | resnet8x4 | KD | 3 | 74.00 |")
    assert listed[5].endswith("| KD | 4 | 63.00 | 63.00 | 1/3 | unfinished (1/3 epochs) |")
    pivot_line = next(line for line in text.splitlines() if line.startswith("| resnet32x4 a1a1a1a1 -> resnet8x4"))
    assert pivot_line == "| resnet32x4 a1a1a1a1 -> resnet8x4 | 79.42 | - | 72.50 |"


# ---------------------------------------------------------------------------------------------------
# the reproduction table

def record_fetched_teacher(save: Path, digest: str = TEACHER_A) -> None:
    """The record scripts/fetch_pretrained_teachers.sh writes for a teacher it fetched and verified."""
    (save / "models").mkdir(parents=True, exist_ok=True)
    add_to_record(save / "models" / RECORD_FILE, "resnet32x4", digest, "0" * 64,
                  "https://github.com/megvii-research/mdistiller/releases/download/checkpoints/cifar_teachers.tar",
                  "loads strictly into resnet32x4")


def test_reproduction_table_in_every_format(tmp_path: Path) -> None:
    save = tmp_path / "save"
    for trial, best in enumerate([76.0, 76.5, 77.0], 1):  # mean 76.5, std 0.5: interval 76.5 -+ 1.242
        kd_run(save, trial, [best - 1, best], epochs=240)
    kd_run(save, 4, [60.0, 61.0])  # 2 epochs: a group of its own
    record_fetched_teacher(save)
    main([str(save), "--out", str(tmp_path / "out"), "--format", "all", "--plot"])
    out = tmp_path / "out"
    with open(out / "reproduction.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    teacher, other, kd = rows
    assert kd["pair"] == "resnet32x4 a1a1a1a1 -> resnet8x4"
    assert (teacher["pair"], teacher["method"], teacher["published"], teacher["best_mean"]) == \
        ("resnet32x4 a1a1a1a1", "teacher (used)", "79.4200", "79.4200")
    assert teacher["protocol"] == "" and teacher["verdict"] == "n too small"
    assert (kd["method"], kd["n"], kd["best_mean"], kd["best_std"], kd["best_min"], kd["best_max"]) == \
        ("KD (epochs=240)", "3", "76.5000", "0.5000", "76.0000", "77.0000")
    low = 76.5 - stats.t.ppf(0.975, 2) * 0.5 / 3 ** 0.5
    assert float(kd["interval_low"]) == pytest.approx(low, abs=1e-4) and kd["difference"] == "3.1700"
    assert kd["verdict"] == "ours higher" and kd["protocol"] == ""  # 73.33 < 75.26
    assert other["protocol"] == "epochs 2 (recipe 240)"  # like with like: no verdict against 240 epochs
    assert other["verdict"] == "no published counterpart at these settings"
    assert kd["recipe"] == other["recipe"] == "crd-cifar100/resnet32x4-resnet8x4/kd"
    document = json.loads((out / "summary.json").read_text())
    assert [row["method"] for row in document["reproduction"]] == [row["method"] for row in rows]
    assert document["reproduction"][2]["interval_low"] == pytest.approx(low)
    assert document["reproduction"][0]["best_std"] is None and document["groups"][0]["method"] == "KD"
    text = (out / "summary.md").read_text()
    assert (f"| cifar100 | resnet32x4 a1a1a1a1 -> resnet8x4 | KD (epochs=240) | 73.33 | 76.50 ± 0.50 (3) | 76.00-77.00 | "
            f"76.50 ± 0.50 | +3.17 | [{low:.2f}, {153 - low:.2f}] | ours higher | as published |") in text
    assert (out / "plots" / "reproduction_cifar100.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs_without_a_published_number_have_no_reproduction_row(tmp_path: Path) -> None:
    student_run(tmp_path, "kd", "resnet8", "resnet8", 0.1, 0.9, 0, 1, [10.0, 12.0])          # no published pair
    student_run(tmp_path, "kdsvd", "resnet20", "resnet56", 1, 0, 1, 1, [60.0, 61.0], teacher_acc=72.0)  # none for kdsvd
    text, written = summarize(tmp_path, tmp_path / "out", "all", make_plots=True)
    with open(tmp_path / "out" / "reproduction.csv", newline="") as handle:
        (teacher,) = list(csv.DictReader(handle))  # only the resnet56 teacher, against the CRD paper's 72.34
    assert (teacher["pair"], teacher["published"], teacher["difference"]) == ("resnet56", "72.3400", "-0.3400")
    assert teacher["protocol"] == "teacher file unknown (the run recorded no teacher digest)"
    assert "| cifar100 | resnet56 | teacher (used) | 72.34 | 72.00 (1) |" in text
    assert not list((tmp_path / "out" / "plots").glob("reproduction_*.png"))  # no student against a published one


def test_plot_colours_follow_the_method_and_epochs_are_whole(save: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from reporting import summary

    figures = []
    monkeypatch.setattr(summary, "_save", lambda figure, path: figures.append(figure) or path)
    summarize(save, tmp_path, "csv", make_plots=True)
    pair = [figure for figure in figures if "resnet32x4 -> resnet8x4" in
            (figure._suptitle.get_text() if figure._suptitle else figure.axes[0].get_title())]
    colours: dict[str, tuple] = {}
    for axis in (axis for figure in pair for axis in figure.axes if axis.get_visible()):
        for line in axis.get_lines():
            method = line.get_label().split(" (n=")[0]
            assert colours.setdefault(method, line.get_color()) == line.get_color(), method
        assert all(float(tick).is_integer() for tick in axis.get_xticks()), axis.get_title()
    assert len(colours) >= 2 and len(set(colours.values())) == len(colours)


def test_a_teacher_at_the_fetch_path_is_not_published_by_its_name(tmp_path: Path) -> None:
    """A random-init teacher saved as save/models/resnet32x4_vanilla/ckpt_epoch_240.pth: its row, its
    students' rows and the vanilla table say it is unknown until the fetch record lists its digest."""
    fetch_path = tmp_path / "models" / "resnet32x4_vanilla" / "ckpt_epoch_240.pth"
    fetch_path.parent.mkdir(parents=True)
    weights = {"conv1.weight": torch.randn(4, 3, 3, 3)}  # stands in for a random-init resnet32x4
    torch.save({"model": weights, "epoch": 240, "accuracy": 0.0}, fetch_path)
    digest = weights_digest(weights)
    for trial in (1, 2):
        kd_run(tmp_path, trial, [75.0 + trial], epochs=240, teacher=digest, teacher_acc=0.0)
    text, _ = summarize(tmp_path, tmp_path / "out", "csv")
    section = text[text.index("## Reproduction"):text.index("## Distillation runs")]
    unknown = f"teacher {digest[:8]} unknown (not fetched by scripts/fetch_pretrained_teachers.sh)"
    rows = [line for line in section.splitlines() if line.startswith("| cifar100 |")]
    assert len(rows) == 2 and all(f"| {unknown} |" in line for line in rows), rows
    assert "as published" not in section
    assert "| cifar100 | resnet32x4 | checkpoint not confirmed as published | 1 | 0.00 |" in text
    record_fetched_teacher(tmp_path, digest)
    text, _ = summarize(tmp_path, tmp_path / "out", "csv")
    section = text[text.index("## Reproduction"):text.index("## Distillation runs")]
    assert section.count("| as published |") == 2 and unknown not in section
    assert "| cifar100 | resnet32x4 | published checkpoint | 1 | 0.00 |" in text


# ---------------------------------------------------------------------------------------------------
# files a researcher's save folder can hold: each is named in one line, every readable run is reported

def _rewrite_metrics(run_dir: Path, edit) -> None:
    path = run_dir / "metrics.csv"
    path.write_bytes(edit(path.read_bytes()))


def damaged_save(save: Path) -> dict[str, Path]:
    """Seven KD trials, six with one damaged or inconsistent file each, and a folder with an empty metrics.csv."""
    def trial(number: int, accuracies: list[float]) -> Path:
        return student_run(save, "kd", "resnet8x4", "resnet32x4", 0.1, 0.9, 0, number, accuracies)

    files = {"good": trial(1, [60.0, 70.0, 72.0]) / "metrics.csv"}
    files["latin1"] = trial(2, [61.0, 71.0, 73.0]) / "metrics.csv"
    _rewrite_metrics(files["latin1"].parent, lambda data: data.replace(b"1.5,", b"1\xb55,", 1))
    files["cut"] = trial(3, [62.0, 72.0, 74.0]) / "metrics.csv"  # the last epoch lost, half a line written
    _rewrite_metrics(files["cut"].parent, lambda data: b"".join(data.splitlines(keepends=True)[:-1]) + b"3,0.05")
    files["no_accuracy_column"] = trial(4, [63.0, 73.0, 75.0]) / "metrics.csv"
    _rewrite_metrics(files["no_accuracy_column"].parent, lambda data: data.replace(b"test_acc1", b"acc1", 1))
    files["run_record"] = trial(5, [64.0, 74.0, 76.0]) / "run.json"
    files["run_record"].write_text('{"settings": ')
    files["checkpoint"] = trial(6, [65.0, 75.0, 77.0]) / "resnet8x4_last.pth"
    files["checkpoint"].write_bytes(b"not a checkpoint")
    files["nan"] = trial(7, [66.0, 76.0, float("nan")]) / "metrics.csv"
    empty_run = "kd_cifar100_S_resnet8x4_T_resnet32x4_r_0.1_a_0.9_b_0_trial_8"
    files["empty"] = save / "student" / "student_model" / empty_run / "metrics.csv"
    files["empty"].parent.mkdir()
    files["empty"].write_text("")
    return files


def test_each_bad_file_is_one_notice_and_every_readable_run_is_read(tmp_path: Path) -> None:
    files = damaged_save(tmp_path)
    notices: list[str] = []
    runs = {run.trial: run for run in scan(tmp_path, notices)}
    assert sorted(runs) == ["1", "2", "3", "4", "5", "6", "7"]  # the empty one has nothing to report
    assert len(notices) == 7
    for name, path in files.items():
        lines = [line for line in notices if line.startswith(f"{path}: ")]
        assert len(lines) == (name != "good"), (name, notices)
    said = {name: next((line for line in notices if line.startswith(f"{path}: ")), "") for name, path in files.items()}
    assert "not UTF-8 text (byte 0xb5" in said["latin1"] and said["latin1"].endswith("read from its checkpoint.")
    assert (runs["2"].best_acc, runs["2"].last_acc, runs["2"].rows) == (73.0, 73.0, [])
    assert "1 line cut short or not numbers (line 4)" in said["cut"]
    assert "ends at epoch 2, but the checkpoint resnet8x4_last.pth is at epoch 3" in said["cut"]
    assert (runs["3"].best_acc, runs["3"].last_acc, runs["3"].epochs_done) == (74.0, 74.0, 3)  # not 72 from the file
    assert "no 'test_acc1' column" in said["no_accuracy_column"] and runs["4"].last_acc == 75.0
    assert "damaged (JSONDecodeError" in said["run_record"] and not runs["5"].recorded and runs["5"].settings
    assert "cannot be read (" in said["checkpoint"] and said["checkpoint"].endswith("folder name and metrics.csv.")
    assert (runs["6"].best_acc, runs["6"].last_acc, runs["6"].epochs_planned) == (77.0, 77.0, None)
    assert "test_acc1 is not a number at epoch 3" in said["nan"]
    assert (runs["7"].best_acc, runs["7"].last_acc) == (76.0, None)  # no last accuracy, not epoch 2's
    assert said["empty"] == f"{files['empty']}: empty; the run is left out."


def test_the_report_names_each_bad_file_and_never_raises(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = damaged_save(tmp_path / "save")
    main([str(tmp_path / "save"), "--out", str(tmp_path / "out"), "--format", "all", "--plot"])
    captured = capsys.readouterr()
    stderr = captured.err.splitlines()
    assert len(stderr) == 7 and all(line.startswith("summary: ") for line in stderr), stderr
    text = (tmp_path / "out" / "summary.md").read_text()
    section = text[text.index("## Files not read, or read in part"):text.index("## cifar100")]
    assert len([line for line in section.splitlines() if line.startswith("- ")]) == 7
    assert all(str(path) in section for name, path in files.items() if name != "good")
    assert len(json.loads((tmp_path / "out" / "summary.json").read_text())["notices"]) == 7
    with open(tmp_path / "out" / "summary.csv", newline="") as handle:  # every readable trial is reported
        assert sorted(int(row["trials"]) for row in csv.DictReader(handle)) == [1, 6]  # 1: its teacher is unknown
    assert (tmp_path / "out" / "plots" / "reproduction_cifar100.png").is_file()


def test_plot_when_a_published_pair_has_no_accuracy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The only published row of the dataset has no number (every accuracy NaN): a row without a
    difference, no heat map, one notice."""
    student_run(tmp_path, "kd", "resnet20", "resnet56", 0.1, 0.9, 0, 1, [float("nan")] * 2, teacher_acc=72.34)
    main([str(tmp_path), "--out", str(tmp_path / "out"), "--plot"])
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "| cifar100 | resnet56 -> resnet20 | KD | 70.66 | - (0) |" in text
    assert "test_acc1 is not a number at epoch 1, 2" in capsys.readouterr().err
    assert not list((tmp_path / "out" / "plots").glob("reproduction_*.png"))


def test_a_folder_that_cannot_be_read_is_left_out_alone(tmp_path: Path) -> None:
    student_run(tmp_path, "kd", "resnet8x4", "resnet32x4", 0.1, 0.9, 0, 1, [60.0, 70.0])
    odd = student_run(tmp_path, "kd", "resnet8x4", "resnet32x4", 0.1, 0.9, 0, 2, [61.0, 71.0], checkpoint=False)
    torch.save({"model": {}, "epoch": "two", "stage": "main"}, odd / "resnet8x4_last.pth")  # not a number
    notices: list[str] = []
    assert [run.trial for run in scan(tmp_path, notices)] == ["1"]
    assert notices == [f"{odd}: cannot be read (ValueError: invalid literal for int() with base 10: 'two'); "
                       "the run is left out."]


def test_a_declared_teacher_mode_splits_from_records_without_it(tmp_path: Path) -> None:
    """A method's teacher_mode is recorded only away from 'eval' (OFD's 'train'): runs recorded before
    it, which lack it, ran an eval-mode teacher and are another experiment."""
    kd_run(tmp_path, 1, [60.0])
    kd_run(tmp_path, 2, [62.0], teacher_mode="train")
    kd_run(tmp_path, 3, [64.0], teacher_mode="train")
    old, new = sorted(kd_groups(tmp_path), key=lambda g: len(g.runs))
    assert [r.trial for r in old.runs] == ["1"] and [r.trial for r in new.runs] == ["2", "3"]
    assert (old.distinct, new.distinct) == ("teacher_mode=eval", "teacher_mode=train")
