"""reporting.summary on synthetic run folders with known numbers."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from reporting.summary import main, summarize

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


def test_unfinished_run_is_flagged(outputs) -> None:
    _, text, rows = outputs
    dcd = _row(rows, method="DCD")
    assert dcd["trials"] == "2" and dcd["unfinished"] == "1"
    assert dcd["epochs_done"] == "2" and dcd["epochs_planned"] == "3"
    assert dcd["best_acc_mean"] == "74.2500" and dcd["best_acc_std"] == "0.3536"
    line = next(line for line in text.splitlines() if "| resnet8x4 | DCD |" in line)
    assert line.endswith("| 2 | 74.25 | 0.35 | 73.75 | 1.06 | 2/3* |")


def test_run_without_checkpoint_is_read_from_its_folder_name(outputs) -> None:
    _, text, rows = outputs
    rrd = _row(rows, method="RRD")
    assert (rrd["teacher"], rrd["student"], rrd["beta"], rrd["trials"]) == ("resnet32x4", "resnet8x4", "1", "1")
    assert rrd["best_acc_mean"] == "74.0000" and rrd["epochs_planned"] == ""
    assert "| 2/? |" in next(line for line in text.splitlines() if "| resnet8x4 | RRD |" in line)


def test_markdown_single_trial_has_dash_for_std(outputs) -> None:
    _, text, _ = outputs
    line = next(line for line in text.splitlines() if "| resnet8x4 | CRD+KD |" in line)
    assert line == "| cifar100 | resnet32x4 | resnet8x4 | CRD+KD | 1 | 1 | 0.8 | 1 | 75.00 | - | 74.75 | - | 3/3 |"
    assert "what the CRD/DCD/RRD papers report" in text


def test_pivot_table_in_paper_layout(outputs) -> None:
    _, text, _ = outputs
    lines = text.splitlines()
    start = lines.index("| teacher -> student | T | S | KD | CRD+KD | RRD | DCD | KD (r=1,a=1,b=0) |")
    assert lines[start + 2] == "| resnet56 -> resnet20 | 72.34 | - | 70.50 | - | - | - | - |"
    assert lines[start + 3] == "| resnet32x4 -> resnet8x4 | 79.42 | 72.75 | 73.67 | 75.00 | 74.00 | 74.25* | 61.00 |"
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
    assert sorted(p.name for p in (tmp_path / "csv_only").iterdir()) == ["summary.csv"]
    assert "| DCD |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    assert "does not exist" in " ".join(capsys.readouterr().err.split())  # wrapped at 100 columns
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "empty")])
    assert "No runs found" in " ".join(capsys.readouterr().err.split())


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
