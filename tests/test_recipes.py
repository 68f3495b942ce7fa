"""recipes: every table file loads and sets only real flags; train_student.py --recipe applies and
records a cell (explicit flags win, as departures); bad recipes are refused up front; reproduce.sh
lists the runs of three tables (two published ones and a small one made here)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import recipes
from training import student as train_student
from distiller_zoo import METHODS
from distiller_zoo.base import unused_method_flags
from helper.errors import UserError
from helpers import ROOT, write_published_teacher
from reporting import method_table

FIXTURE = '''title = "A small test table"
source = "made up for the tests"
dataset = "cifar100"

[settings]
epochs = 2

[[cell]]
teacher = "resnet8"
student = "resnet8"
method = "kd"
settings = { kd_T = 2.0 }
published = 50.0

[[cell]]
teacher = "resnet8"
student = "resnet8"
method = "crd+kd"
published = 51.0
'''


@pytest.fixture
def fixture_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "my_recipes"
    folder.mkdir()
    (folder / "tiny-test.toml").write_text(FIXTURE)
    monkeypatch.setenv("RECIPE_PATH", str(folder))
    return folder


@pytest.mark.registry
def test_every_recipe_file_loads_and_sets_only_flags_of_its_method() -> None:
    tables = recipes.tables()
    assert {"crd-cifar100", "dkd-cifar100"} <= set(tables)
    flags = recipes.script_flags()
    for table in tables.values():
        assert table.cells and table.source and table.title
        for cell in table.cells:
            assert cell.key in METHODS and cell.name.startswith(f"{table.name}/")
            for key in cell.settings:
                assert key in flags and key not in unused_method_flags(cell.key), (cell.name, key)
                assert key not in recipes.CELL_FIELDS


def test_the_crd_and_dkd_tables() -> None:
    crd, dkd = recipes.load_table("crd-cifar100"), recipes.load_table("dkd-cifar100")
    assert len(crd.cells) == 175 and len({(c.teacher, c.student) for c in crd.cells}) == 13
    assert crd.teachers["resnet32x4"] == 79.42
    assert recipes.find_cell("crd-cifar100/resnet32x4-resnet8x4/crd+kd").flags()["alpha"] == 1.0
    betas = {(c.teacher, c.student): c.expected()["dkd_beta"] for c in dkd.cells}
    assert len(betas) == 11
    assert betas["resnet32x4", "resnet8x4"] == 8.0 and betas["resnet56", "resnet20"] == 2.0
    assert betas["resnet110", "resnet32"] == 2.0 and betas["vgg13", "vgg8"] == betas["wrn_40_2", "wrn_16_2"] == 6.0
    assert recipes.find_cell("dkd-cifar100/resnet56-resnet20/dkd").published == 71.97


def test_readme_lists_the_recipe_tables() -> None:
    tables = method_table.readme_tables((ROOT / "README.md").read_text())
    assert tables["recipes"] == method_table.recipe_tables(), "run: python -m reporting.method_table --write"
    for name in recipes.tables():
        assert f"sh scripts/reproduce.sh {name}" in tables["recipes"]


@pytest.fixture(scope="module")
def save(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("recipe_save")
    write_published_teacher(folder, "resnet56")
    write_published_teacher(folder, "resnet8")
    return folder


def plan_of(save: Path, *flags: str) -> dict:
    opt = train_student.parse_args(["--save_folder", str(save), "--print_run_dir", *flags])
    return train_student.run_plan(opt).identity


def test_a_recipe_run_records_exactly_the_recipe(save: Path) -> None:
    identity = plan_of(save, "--recipe", "dkd-cifar100/resnet56-resnet20/dkd", "--trial", "2")
    settings, recipe = identity["settings"], identity["recipe"]
    assert recipe["name"] == "dkd-cifar100/resnet56-resnet20/dkd" and recipe["departures"] == {}
    assert recipe["settings"] == {"dataset": "cifar100", "model_s": "resnet20", "distill": "dkd", "gamma": 1.0,
                                  "alpha": 0.0, "beta": 1.0, "dkd_beta": 2.0}
    assert {key: settings[key] for key in recipe["settings"]} == recipe["settings"]
    assert (settings["epochs"], settings["learning_rate"], settings["dkd_warmup"]) == (240, 0.05, 20)
    assert identity["teacher"]["path"] == str(save / "models" / "resnet56_vanilla" / "ckpt_epoch_240.pth")
    assert "recipe" not in settings
    plain = plan_of(save, "--path_t", identity["teacher"]["path"], "--model_s", "resnet20", "--distill", "dkd",
                    "--dkd_beta", "2", "--trial", "2")
    assert plain["settings"] == settings and "recipe" not in plain  # the same run, typed by hand


def test_an_explicit_flag_wins_and_is_a_departure(save: Path) -> None:
    identity = plan_of(save, "--recipe", "dkd-cifar100/resnet56-resnet20/dkd", "--dkd_beta", "8", "--epochs", "3",
                       "--dkd_T", "4", "--nce_k", "5", "--num_workers", "0")
    assert identity["settings"]["dkd_beta"] == 8.0 and identity["settings"]["epochs"] == 3
    assert identity["recipe"]["departures"] == {"dkd_beta": {"given": 8.0, "recipe": 2.0},
                                                "epochs": {"given": 3, "recipe": 240}}


@pytest.mark.parametrize("flags, message", [
    (["--recipe", "dkd-cifar100/resnet56-resnet20/dkdd"], "Did you mean 'dkd-cifar100/resnet56-resnet20/dkd'"),
    (["--recipe", "dkd-cifar10/resnet56-resnet20/dkd"], "No recipe table 'dkd-cifar10'. Did you mean 'dkd-cifar100'"),
    (["--recipe", "dkd-cifar100/resnet56-resnet20/dkd", "--dataset", "cifar10"], "trains --dataset cifar100"),
    (["--recipe", "dkd-cifar100/resnet56-resnet20/dkd", "--model_s", "resnet8"], "trains --model_s resnet20"),
    (["--recipe", "dkd-cifar100/resnet56-resnet20/dkd", "--distill", "kd"], "trains --distill dkd"),
], ids=["unknown_cell", "unknown_table", "dataset", "student", "method"])
def test_a_recipe_that_contradicts_the_flags_is_refused(save: Path, flags: list[str], message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        train_student.parse_args(["--save_folder", str(save), "--print_run_dir", *flags])


def test_a_teacher_of_another_architecture_is_refused(save: Path) -> None:
    other = save / "models" / "resnet8_vanilla" / "ckpt_epoch_240.pth"
    with pytest.raises(UserError, match="is a resnet8 teacher, but --recipe .* distils a resnet56"):
        train_student.parse_args(["--recipe", "dkd-cifar100/resnet56-resnet20/dkd", "--path_t", str(other),
                                  "--print_run_dir"])


@pytest.mark.parametrize("text, message", [
    ('title = "t"\nsource = "s"\ndataset = "cifar100"\n[[cell]\n', r"is not valid TOML: .*line 4"),
    (FIXTURE.replace("kd_T = 2.0", "dkd_beta = 2.0"), r"cell 1 \(resnet8 -> resnet8, kd\): 'dkd_beta' is a flag of "
                                                      r"DKD.*, not of KD"),
    (FIXTURE.replace("kd_T = 2.0", "kd_TT = 2.0"), r"'kd_TT' is no training flag .* Did you mean 'kd_T'"),
    (FIXTURE.replace("kd_T = 2.0", "kd_T = -1.0"), r"--kd_T must be > 0"),
    (FIXTURE.replace("kd_T = 2.0", "model_s = 'resnet20'"), r"'model_s' is set by the cell's student"),
    (FIXTURE.replace('epochs = 2', 'epochs = "2"'), r"'epochs' takes a int"),
    (FIXTURE.replace('method = "kd"', 'method = "kd+kd"'), r"KD has a KD term already"),
    (FIXTURE.replace('method = "kd"', 'method = "dkdd"'), r"method 'dkdd' is no --distill key.*Did you mean 'dkd'"),
    (FIXTURE.replace('teacher = "resnet8"', 'teacher = "resnet9"', 1), r"'resnet9' is no architecture"),
    (FIXTURE.replace("published = 50.0", "published = 150.0"), r"published must be a top-1 accuracy"),
    (FIXTURE.replace('method = "crd+kd"', 'method = "kd"'), r"appears twice"),
    (FIXTURE.replace("[settings]", "colour = 1\n[settings]"), r"'colour' is no key of a table"),
], ids=["toml_line", "other_method_flag", "unknown_flag", "range", "cell_field", "type", "kd_plus_kd",
        "unknown_method", "unknown_arch", "percent", "duplicate", "unknown_key"])
def test_a_malformed_recipe_file_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad-table.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as error:
        recipes.parse_table(path)
    assert str(path) in str(error.value)


def test_recipe_path_adds_tables(fixture_table: Path, save: Path) -> None:
    assert "tiny-test" in recipes.tables()
    identity = plan_of(save, "--recipe", "tiny-test/resnet8-resnet8/crd+kd")
    settings = identity["settings"]
    assert (settings["epochs"], settings["alpha"], settings["beta"]) == (2, 1.0, 0.8)


def _reproduce(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "scripts/reproduce.sh", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHON": str(Path(sys.executable)), **env})


def test_reproduce_lists_the_tables(fixture_table: Path) -> None:
    listing = _reproduce("--list")
    assert listing.returncode == 0, listing.stderr
    assert "dkd-cifar100: 11 cells" in listing.stdout and "crd-cifar100: 175 cells" in listing.stdout
    assert "tiny-test: 2 cells" in listing.stdout
    crd = subprocess.run([sys.executable, "-m", "recipes", "--cells", "crd-cifar100"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)  # the runs reproduce.sh feeds the sweep
    cells = crd.stdout.split()
    assert len(cells) == len(set(cells)) == 175 and "crd-cifar100/vgg13-MobileNetV2/crd+kd" in cells
    unknown = _reproduce("dkd-cifar10")
    assert unknown.returncode == 2 and "Did you mean 'dkd-cifar100'" in unknown.stderr


def test_dry_run_lists_the_runs_of_a_table(fixture_table: Path, tmp_path: Path) -> None:
    save = tmp_path / "save"
    for arch in ("resnet8", "resnet56", "resnet110", "vgg13"):
        write_published_teacher(save, arch)
    runs = save / "student" / "student_model"
    tiny = _reproduce("tiny-test", DRY_RUN="1", TRIALS="2", SAVE_FOLDER=str(save))
    assert tiny.returncode == 0, tiny.stdout + tiny.stderr
    listed = re.findall(r"^missing +(\S+)$", tiny.stdout, re.M)
    assert sorted(Path(path).name for path in listed) == sorted(
        f"{name}_cifar100_S_resnet8_T_resnet8_r_{weights}_trial_{trial}"
        for name, weights in (("kd", "0.1_a_0.9_b_0"), ("crd", "1_a_1_b_0.8")) for trial in (1, 2))
    assert "estimate: 4 runs (2 cells x 2 trials), about" in tiny.stdout
    dkd = _reproduce("dkd-cifar100", DRY_RUN="1", TRIALS="2", SAVE_FOLDER=str(save),
                     PAIRS="resnet56:resnet20 resnet110:resnet32")
    assert dkd.returncode == 0, dkd.stdout + dkd.stderr
    assert sorted(Path(path).name for path in re.findall(r"^missing +(\S+)$", dkd.stdout, re.M)) == sorted(
        f"dkd_cifar100_S_{student}_T_{teacher}_r_1_a_0_b_1_trial_{trial}"
        for teacher, student in (("resnet56", "resnet20"), ("resnet110", "resnet32")) for trial in (1, 2))
    crd = _reproduce("crd-cifar100", DRY_RUN="1", TRIALS="1", SAVE_FOLDER=str(save),
                     PAIRS="resnet56:resnet20 vgg13:MobileNetV2", METHODS="kd crd+kd")
    assert crd.returncode == 0, crd.stdout + crd.stderr
    assert sorted(Path(path).name for path in re.findall(r"^missing +(\S+)$", crd.stdout, re.M)) == [
        "crd_cifar100_S_MobileNetV2_T_vgg13_r_1_a_1_b_0.8_trial_1",
        "crd_cifar100_S_resnet20_T_resnet56_r_1_a_1_b_0.8_trial_1",
        "kd_cifar100_S_MobileNetV2_T_vgg13_r_0.1_a_0.9_b_0_trial_1",
        "kd_cifar100_S_resnet20_T_resnet56_r_0.1_a_0.9_b_0_trial_1"]
    assert "estimate: 4 runs (4 cells x 1 trials)" in crd.stdout
    assert not runs.exists()  # a dry run creates nothing
    unknown = _reproduce("crd-cifar100", DRY_RUN="1", SAVE_FOLDER=str(save), METHODS="crdkd")
    assert unknown.returncode == 2 and "Did you mean 'crd+kd'" in unknown.stderr
