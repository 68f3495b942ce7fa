"""analyze.py and analysis/: CKA, logit correlations and ECE against independent computations, every
figure written end to end on generated data, and one-paragraph errors for bad inputs."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import analyze
from analysis import metrics
from analysis.extract import LoadedModel, resolve_checkpoint, run_label
from analysis.report import make_labels_unique
from helper.checkpoint import save_checkpoint
from models import model_dict

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("tsne.png", "logit_correlation.png", "cka.png", "reliability.png", "class_accuracy.png")
NUMBERS = ("tsne_points.csv", "logit_correlation.csv", "cka.csv", "calibration_bins.csv", "class_accuracy.csv",
           "summary.csv", "summary.json")


# ---- linear CKA (Kornblith et al., 2019) -------------------------------------------------------------------

def hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Independent float64 reference: tr(KHLH) / sqrt(tr(KHKH) tr(LHLH)) with an explicit centring matrix H."""
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h)  # noqa: E731
    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def random_orthogonal(dim: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q * np.sign(np.diag(r))


def test_cka_of_a_representation_with_itself_is_one() -> None:
    x = torch.randn(60, 24)
    assert metrics.linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    maps = torch.randn(40, 4, 5, 5)  # feature maps are flattened per sample
    assert metrics.linear_cka(maps, maps) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 16)), rng.normal(size=(50, 9)) + rng.normal(size=(50, 1))
    reference = metrics.linear_cka(torch.from_numpy(x), torch.from_numpy(y))
    rotated = x @ random_orthogonal(16, rng)
    assert metrics.linear_cka(torch.from_numpy(rotated), torch.from_numpy(y)) == pytest.approx(reference, abs=1e-12)
    assert metrics.linear_cka(torch.from_numpy(3.7 * x), torch.from_numpy(0.02 * y)) == pytest.approx(reference,
                                                                                                        abs=1e-12)
    stretched = x * np.linspace(0.1, 10, 16)  # anisotropic scaling is not an invariance of CKA
    assert abs(metrics.linear_cka(torch.from_numpy(stretched), torch.from_numpy(y)) - reference) > 1e-3


def test_cka_matches_the_hsic_formula_with_an_explicit_centring_matrix() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 3, 4, 4)).astype(np.float32)
    y = (x.reshape(30, -1)[:, :20] @ rng.normal(size=(20, 7)) + rng.normal(size=(30, 7))).astype(np.float32)
    expected = hsic_cka(x.astype(np.float64), y.astype(np.float64))
    assert metrics.linear_cka(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(expected, abs=1e-10)
    chunked = metrics.cka_from_grams(metrics.centered_gram(torch.from_numpy(x), chunk=5),
                                     metrics.centered_gram(torch.from_numpy(y), chunk=3))
    assert chunked == pytest.approx(expected, abs=1e-10)
    grams_x = [metrics.centered_gram(torch.from_numpy(x)), metrics.centered_gram(torch.from_numpy(y))]
    matrix = metrics.cka_matrix(grams_x, grams_x[:1])
    assert matrix.shape == (2, 1) and matrix[0, 0] == pytest.approx(1.0) and matrix[1, 0] == pytest.approx(expected)


def test_cka_of_a_constant_representation_is_nan() -> None:
    assert np.isnan(metrics.linear_cka(torch.ones(10, 4), torch.randn(10, 4)))


# ---- class-mean logit correlation ------------------------------------------------------------------------

def test_correlation_difference_of_a_model_with_itself_is_zero() -> None:
    labels = torch.arange(120) % 6
    logits = torch.randn(120, 6) + 3 * torch.nn.functional.one_hot(labels, 6)
    difference, mean = metrics.correlation_difference(logits, logits, labels, 6)
    assert difference.shape == (6, 6) and np.all(difference == 0) and mean == 0
    _, other = metrics.correlation_difference(logits, torch.randn(120, 6), labels, 6)
    assert other > 0.05


def test_class_correlation_by_hand() -> None:
    labels = torch.tensor([0, 0, 1, 2])
    logits = torch.tensor([[1.0, 0.0, 0.0], [3.0, 2.0, 1.0], [0.0, 1.0, 2.0], [5.0, 1.0, 0.0]])
    means = metrics.class_mean_logits(logits, labels, 3)
    np.testing.assert_allclose(means, [[2.0, 1.0, 0.5], [0.0, 1.0, 2.0], [5.0, 1.0, 0.0]])
    expected = np.array([[np.corrcoef(a, b)[0, 1] for b in means] for a in means])
    np.testing.assert_allclose(metrics.class_correlation(logits, labels, 3), expected, atol=1e-12)
    assert expected[0, 1] == pytest.approx(-0.9819805, abs=1e-6)  # (2,1,.5) vs (0,1,2)


# ---- expected calibration error (Guo et al., 2017) -----------------------------------------------------

def probabilities_with_confidence(confidence: np.ndarray, predicted: np.ndarray, classes: int) -> torch.Tensor:
    """Rows whose top class is ``predicted`` with probability ``confidence``, the rest spread evenly."""
    rows = np.repeat(((1 - confidence) / (classes - 1))[:, None], classes, axis=1)
    rows[np.arange(len(rows)), predicted] = confidence
    return torch.from_numpy(rows)


def test_ece_of_a_perfectly_calibrated_predictor_is_zero() -> None:
    """30 samples at each bin centre (m - 0.5)/15, of which exactly a centre's fraction are correct."""
    centres = (np.arange(15) + 0.5) / 15
    confidence = np.repeat(centres, 30)
    correct = np.concatenate([np.arange(30) < round(c * 30) for c in centres])
    predicted = np.zeros(len(confidence), dtype=np.int64)
    labels = torch.from_numpy(np.where(correct, 0, 1))
    result = metrics.calibration(probabilities_with_confidence(confidence, predicted, 40), labels)
    assert result.ece == pytest.approx(0.0, abs=1e-12)
    assert result.counts.tolist() == [30] * 15
    np.testing.assert_allclose(result.accuracy, centres, atol=1e-12)


def test_ece_of_a_sampled_calibrated_predictor_is_small_and_of_an_overconfident_one_large() -> None:
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.05, 1.0, size=100_000)
    labels = torch.from_numpy(np.where(rng.uniform(size=confidence.size) < confidence, 0, 1))
    calibrated = metrics.calibration(probabilities_with_confidence(confidence, np.zeros_like(labels), 40), labels)
    assert calibrated.ece < 0.01
    half_right = torch.from_numpy(np.arange(1000) % 2)  # 50% correct at 99% confidence
    overconfident = metrics.calibration(probabilities_with_confidence(np.full(1000, 0.99), np.zeros(1000, int), 10),
                                        half_right)
    assert overconfident.ece == pytest.approx(0.49, abs=1e-9)


def test_ece_hand_computed_small_case() -> None:
    # bins of width 1/15: 0.9 and 0.91 -> (13/15, 14/15], 0.95 -> (14/15, 1], 0.3 -> (4/15, 5/15]
    confidence = np.array([0.9, 0.95, 0.91, 0.3])
    labels = torch.tensor([0, 1, 1, 0])  # the top class is 0: right, wrong, wrong, right
    result = metrics.calibration(probabilities_with_confidence(confidence, np.zeros(4, int), 10), labels)
    expected = 2 / 4 * abs(0.5 - 0.905) + 1 / 4 * abs(0.0 - 0.95) + 1 / 4 * abs(1.0 - 0.3)
    assert expected == pytest.approx(0.615)
    assert result.ece == pytest.approx(expected, abs=1e-12)
    assert np.flatnonzero(result.counts).tolist() == [4, 13, 14]


def test_bin_edges_are_right_closed() -> None:
    labels = torch.zeros(2, dtype=torch.int64)
    result = metrics.calibration(probabilities_with_confidence(np.array([0.8, 1.0]), np.zeros(2, int), 10), labels)
    assert np.flatnonzero(result.counts).tolist() == [11, 14]  # 0.8 = 12/15 is the top of bin 11


def test_per_class_accuracy() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    accuracy = metrics.per_class_accuracy(logits, torch.tensor([0, 1, 1, 0]), 3)
    np.testing.assert_allclose(accuracy[:2], [50.0, 50.0])
    assert np.isnan(accuracy[2])


# ---- checkpoints, folders and labels --------------------------------------------------------------------

def save_model(path: Path, arch: str, num_classes: int = 100, seed: int = 0, record_arch: bool = True) -> Path:
    torch.manual_seed(seed)
    state = {"model": model_dict[arch](num_classes=num_classes).state_dict(), "epoch": 1}
    if record_arch:
        state["arch"] = arch
    save_checkpoint(state, path)
    return path


def test_per_class_panels_share_one_y_scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from analysis import plots

    figures = []
    monkeypatch.setattr(plots, "save", lambda figure, path, title: figures.append(figure) or path)
    plots.plot_class_accuracy_difference([("near", np.array([-1.0, 0.5, np.nan])),
                                          ("far", np.array([-30.0, 12.0, 4.0]))], tmp_path / "c.png")
    (figure,) = figures
    limits = [axis.get_ylim() for axis in figure.axes if axis.get_visible()]
    assert len(limits) == 2 and limits[0] == limits[1] and limits[0][0] < -30 and limits[0][1] > 12


def test_run_folder_takes_best_then_last(tmp_path: Path) -> None:
    run = tmp_path / "kd_cifar100_S_resnet8_T_resnet20_r_0.1_a_0.9_b_0_trial_2"
    save_model(run / "resnet8_last.pth", "resnet8")
    assert resolve_checkpoint(run, "--path_s") == run / "resnet8_last.pth"
    save_model(run / "resnet8_best.pth", "resnet8")
    assert resolve_checkpoint(run, "--path_s") == run / "resnet8_best.pth"
    assert run_label(run / "resnet8_best.pth", "resnet8") == "kd r=0.1 a=0.9 b=0"
    assert run_label(tmp_path / "resnet8_digits_vanilla" / "resnet8_last.pth", "resnet8") == "resnet8_digits_vanilla"


def test_equal_labels_are_told_apart_by_trial_else_by_number(tmp_path: Path) -> None:
    def loaded(folder: str) -> LoadedModel:
        path = tmp_path / folder / "resnet8_best.pth"
        return LoadedModel(run_label(path, "resnet8"), "resnet8", path, torch.nn.Identity())

    runs = [loaded(f"dcd_cifar100_S_resnet8_T_resnet20_r_1_a_0_b_1_trial_{t}") for t in (1, 2)]
    same = [loaded("resnet8_vanilla"), loaded("resnet8_vanilla"), loaded("kd_cifar100_S_a_T_b_r_1_a_0_b_1_trial_1")]
    make_labels_unique([*runs, *same])
    assert [m.label for m in runs] == ["dcd r=1 a=0 b=1 trial 1", "dcd r=1 a=0 b=1 trial 2"]
    assert [m.label for m in same] == ["resnet8_vanilla", "resnet8_vanilla #2", "kd r=1 a=0 b=1"]


def test_helper_does_not_import_analysis() -> None:
    for path in (ROOT / "helper").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(name == "analysis" or name.startswith("analysis.") for name in names), path


# ---- end to end on the generated CIFAR-100 -------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random-init models: a resnet8 teacher (arch from its folder name), a student run folder and a file."""
    root = tmp_path_factory.mktemp("analysis_ckpts")
    teacher = save_model(root / "resnet8_vanilla" / "ckpt_epoch_240.pth", "resnet8", record_arch=False)
    run = root / "kd_cifar100_S_resnet8_T_resnet8_r_0.1_a_0.9_b_0_trial_0"
    save_model(run / "resnet8_best.pth", "resnet8", seed=1)
    save_model(run / "resnet8_last.pth", "resnet8", seed=2)
    other = save_model(root / "wrn_16_1_vanilla" / "wrn_16_1_last.pth", "wrn_16_1", seed=3)
    return {"teacher": teacher, "run": run, "other": other, "root": root}


def test_every_figure_and_number_is_written(checkpoints: dict[str, Path], cifar_folder: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "analysis"
    analyze.main(["--path_t", str(checkpoints["teacher"]), "--path_s", str(checkpoints["run"]),
                  str(checkpoints["other"]), "--data_folder", str(cifar_folder), "--device", "cpu", "--out",
                  str(out), "--num_samples", "150", "--classes", "10", "--batch_size", "64"])
    assert str(out) in capsys.readouterr().out
    for name in FIGURES:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert (out / name).stat().st_size > 5000, name
    for name in NUMBERS:
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    models = summary["models"]
    assert [m["model"] for m in models] == ["teacher", "kd r=0.1 a=0.9 b=0", "wrn_16_1_vanilla"]
    assert models[1]["checkpoint"].endswith("resnet8_best.pth")
    assert models[0]["agreement_with_teacher"] == 100.0
    for student in models[1:]:
        assert 0 <= student["logit_corr_mean_abs_diff"] <= 2 and 0 <= student["cka_penultimate"] <= 1 + 1e-9
    cka_rows = (out / "cka.csv").read_text().splitlines()
    assert len(cka_rows) == 1 + 5 * 5 + 5 * 5  # resnet8 and wrn_16_1 both return 5 features
    assert len((out / "logit_correlation.csv").read_text().splitlines()) == 1 + 2 * 100 * 100


def test_same_student_against_itself_gives_zero_difference_and_cka_one(checkpoints: dict[str, Path],
                                                                      cifar_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "self"
    best = checkpoints["run"] / "resnet8_best.pth"
    analyze.main(["--path_t", str(best), "--path_s", str(best), "--data_folder", str(cifar_folder),
                  "--device", "cpu", "--out", str(out), "--num_samples", "60", "--classes", "5"])
    student = json.loads((out / "summary.json").read_text())["models"][1]
    assert student["logit_corr_mean_abs_diff"] == 0.0
    assert student["cka_penultimate"] == pytest.approx(1.0, abs=1e-9)
    assert student["agreement_with_teacher"] == 100.0


# ---- bad inputs: one paragraph, exit status 2, no traceback ------------------------------------------

def fails(argv: list[str], capsys: pytest.CaptureFixture, *needles: str) -> str:
    with pytest.raises(SystemExit) as info:
        analyze.main(argv)
    err = " ".join(capsys.readouterr().err.split())
    assert info.value.code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def test_bad_inputs_get_one_paragraph_errors(checkpoints: dict[str, Path], cifar_folder: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    teacher, run = str(checkpoints["teacher"]), str(checkpoints["run"])
    common = ["--data_folder", str(cifar_folder), "--device", "cpu", "--out", str(tmp_path / "out")]
    fails(["--path_t", teacher, *common], capsys, "--path_s are required")
    fails(["--path_t", str(tmp_path / "nope.pth"), "--path_s", run, *common], capsys, "does not exist")
    empty = tmp_path / "empty_run"
    empty.mkdir()
    fails(["--path_t", teacher, "--path_s", str(empty), *common], capsys, "<model>_best.pth")
    corrupt = tmp_path / "resnet8_x" / "resnet8_last.pth"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"not a checkpoint" * 8)
    fails(["--path_t", teacher, "--path_s", str(corrupt), *common], capsys, "truncated, corrupt")
    unknown = save_model(tmp_path / "my_student" / "model.pth", "resnet8", record_arch=False)
    fails(["--path_t", teacher, "--path_s", str(unknown), *common], capsys, "Cannot tell the student's architecture")
    mislabelled = save_model(tmp_path / "resnet20_oops" / "model.pth", "resnet8", record_arch=False)
    fails(["--path_t", teacher, "--path_s", str(mislabelled), *common], capsys, "does not match the architecture",
          "resnet20")
    ten_classes = save_model(tmp_path / "resnet8_digits" / "resnet8_last.pth", "resnet8", num_classes=10)
    fails(["--path_t", str(ten_classes), "--path_s", run, *common], capsys, "10 output classes", "needs 100")
    monkeypatch.setenv("DISTILLERS_OFFLINE", "1")
    fails(["--path_t", teacher, "--path_s", run, *common[2:], "--data_folder", str(tmp_path / "no_data")], capsys,
          "cifar-100-python")
    fails(["--path_t", teacher, "--path_s", run, *common, "--num_samples", "0"], capsys, "--num_samples")
    fails(["--path_t", teacher, "--path_s", run, *common[:2], "--device", "gpu0"], capsys, "is not a device")
