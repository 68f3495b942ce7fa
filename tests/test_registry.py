"""The registry is the single source of truth: every method is one file, and a new file is picked up
by the flags, training, the sweeps, the summary and the README without any other edit: the tests marked
``registry`` cover every registered method, and one check runs them after following README's recipe."""
from __future__ import annotations

import ast
import csv
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import distiller_zoo
from distiller_zoo import METHODS
from distiller_zoo.base import resolve_method
from helper.errors import UserError
from helpers import ROOT, write_published_teacher
from reporting import method_table

HISTORICAL_LOSSES = ["DistillKL", "HintLoss", "Attention", "Similarity", "Correlation", "VIDLoss", "RKDLoss", "PKT",
                     "ABLoss", "FactorTransfer", "FSP", "NSTLoss", "DCDLoss", "RRDLoss"]
SEED_KEYS = ["kd", "hint", "attention", "similarity", "correlation", "vid", "crd", "rkd", "pkt", "abound", "factor",
             "fsp", "nst", "rrd", "dcd"]


@pytest.mark.registry
def test_seed_keys_and_historical_loss_names() -> None:
    assert set(SEED_KEYS) <= set(METHODS)
    for name in HISTORICAL_LOSSES:
        assert isinstance(getattr(distiller_zoo, name), type), name
    from crd.criterion import CRDLoss  # noqa: F401  (RepDistiller's home of CRD)


@pytest.mark.registry
@pytest.mark.parametrize("key", list(METHODS))
def test_each_method_is_one_documented_file(key: str) -> None:
    method = METHODS[key]
    path = ROOT / "distiller_zoo" / f"{key}.py"
    assert method.__module__ == f"distiller_zoo.{key}" and path.is_file()
    docstring = ast.get_docstring(ast.parse(path.read_text()))
    assert docstring and method.display_name and method.paper, key
    assert method.label() == method.display_name
    for flag in method.flags:
        flag.check(flag.default)  # defaults are in range
    assert method.warmup_flag in (None, *(flag.name for flag in method.flags)), key


@pytest.mark.registry
@pytest.mark.parametrize("key", [key for key, method in METHODS.items() if method.warmup_flag])
def test_a_run_shorter_than_the_warmup_says_so(key: str, tmp_path: Path) -> None:
    from training import student as train_student

    method = METHODS[key]
    teacher = write_published_teacher(tmp_path, "resnet8")
    flag = method.warmup_flag
    default = next(f.default for f in method.flags if f.name == flag)

    def notice(*extra: str) -> str | None:
        return method.warmup_notice(train_student.parse_args(["--path_t", str(teacher), "--distill", key, *extra]))

    short = notice("--epochs", "2")
    assert short and f"{flag} {default}" in short and f"{2 / default:.0%}" in short
    assert notice("--epochs", str(default)) is None and notice("--epochs", "2", flag, "2") is None
    assert notice("--epochs", "2", flag, "0") is None


@pytest.mark.registry
def test_readme_tables_match_the_registry() -> None:
    tables = method_table.readme_tables((ROOT / "README.md").read_text())
    assert tables["methods"] == method_table.methods_table(), "run: python -m reporting.method_table --write"
    assert tables["published"] == method_table.published_table(), "run: python -m reporting.method_table --write"
    for key in METHODS:
        assert f"`{key}`" in tables["methods"]


@pytest.mark.registry
def test_aliases_and_unknown_keys() -> None:
    assert resolve_method("icd") is METHODS["dcd"] and resolve_method("rcd") is METHODS["rrd"]
    with pytest.raises(UserError, match="Choose one of: kd"):
        resolve_method("nope")


@pytest.mark.registry
@pytest.mark.parametrize("key", list(METHODS))
def test_help_lists_each_method_and_its_flags_are_range_checked(key: str, tmp_path: Path) -> None:
    from training import student as train_student

    method = METHODS[key]
    help_text = " ".join(train_student.build_parser().format_help().split())
    assert key in help_text.split("method: ", 1)[1].split(" -r ", 1)[0]  # --distill's list
    teacher = write_published_teacher(tmp_path, "resnet8")
    for flag in method.flags:
        assert re.search(rf"{re.escape(method.label())}[^()]*\(--distill [^)]*\b{key}\b", help_text), key
        assert flag.name in help_text
        if flag.minimum is not None and not isinstance(flag.default, bool):
            below = type(flag.default)(flag.minimum - 1)
            with pytest.raises(UserError, match=f"{flag.name} must be >= "):
                train_student.parse_args(["--path_t", str(teacher), "--distill", key, flag.name, str(below)])


@pytest.mark.registry
@pytest.mark.parametrize("key", list(METHODS))
def test_the_summary_names_each_method_as_its_file_says(key: str, tmp_path: Path) -> None:
    from reporting.summary import summarize
    from test_summary import student_run

    method = METHODS[key]
    student_run(tmp_path, key, "resnet8", "resnet32x4", method.default_gamma, method.default_alpha,
                method.default_beta, 1, [10.0, 20.0])
    text, _ = summarize(tmp_path, tmp_path / "out", "csv")
    with open(tmp_path / "out" / "summary.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["method"] == method.label(method.default_alpha), text


def _copy_of_the_repository(target: Path) -> Path:
    """The tracked sources of this checkout (no environment, data, runs or caches)."""
    skipped = {".venv", ".git", "save", "runs", "__pycache__", ".pytest_cache"}

    def ignore(folder: str, names: list[str]) -> set[str]:
        if Path(folder) == ROOT / "data":  # datasets: only the scripts travel
            return {name for name in names if not name.endswith(".sh")}
        return skipped.intersection(names)

    shutil.copytree(ROOT, target, ignore=ignore, symlinks=True)
    return target


@pytest.mark.slow
def test_the_readme_recipe_keeps_the_registry_tests_green(tmp_path: Path) -> None:
    """Follow "Add a method" in a scratch copy: its example file, the table regeneration, then every test
    marked `registry` (the cheap ones for all methods, the end-to-end ones for the new method only)."""
    copy = _copy_of_the_repository(tmp_path / "repo")
    recipe = (ROOT / "README.md").read_text().split("## Add a method", 1)[1]
    (copy / "distiller_zoo" / "mym.py").write_text(re.search(r"```python\n(.*?)```", recipe, re.S).group(1))
    regenerate = subprocess.run([sys.executable, "-m", "reporting.method_table", "--write"], cwd=copy,
                                capture_output=True, text=True, timeout=300)
    assert regenerate.returncode == 0, regenerate.stderr
    files = sorted(str(path.relative_to(copy)) for path in (copy / "tests").glob("test_*.py")
                   if "@pytest.mark.registry" in path.read_text())
    suite = subprocess.run([sys.executable, "-m", "pytest", "-v", "-m", "registry", "-k", "mym or not slow", *files],
                           cwd=copy, capture_output=True, text=True, timeout=600)
    assert suite.returncode == 0, suite.stdout[-4000:] + suite.stderr[-2000:]
    passed = set(re.findall(r"::(\w+)\[mym\] PASSED", suite.stdout))
    assert {"test_each_method_is_one_documented_file", "test_every_method_trains",
            "test_default_weights_when_omitted"} <= passed, suite.stdout[-4000:]
