"""training/: the library behind the entry scripts (what the options hold, who imports the scripts)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers import write_published_teacher
from training import ENTRY_MODULES
from training import student as train_student

REPO = Path(__file__).resolve().parents[1]
ENTRY_SCRIPTS = {name.removesuffix(".py") for name in ENTRY_MODULES}
# every folder of the repository's Python code, and the top-level modules beside the entry scripts
CODE_FOLDERS = ("analysis", "bench", "crd", "dataset", "distiller_zoo", "helper", "models", "recipes", "reporting",
                "scripts", "tests", "training")


def imported_modules(path: Path) -> set[str]:
    """The top-level names of every module ``path`` imports (anywhere in the file), and of those it
    loads by name with importlib.import_module("...")."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.add(node.args[0].value.split(".")[0])
    return found


def test_no_module_imports_an_entry_script() -> None:
    """The entry scripts only call training/; everything else uses training/, never a script."""
    files = [path for folder in CODE_FOLDERS for path in (REPO / folder).rglob("*.py")]
    files += [path for path in REPO.glob("*.py") if path.stem not in ENTRY_SCRIPTS]
    offenders = {str(path.relative_to(REPO)): sorted(imported_modules(path) & ENTRY_SCRIPTS) for path in files}
    assert {path: names for path, names in offenders.items() if names} == {}
    assert len(files) > 100  # the walk saw the repository


def test_the_import_finder_sees_every_form(tmp_path: Path) -> None:
    source = tmp_path / "example.py"
    source.write_text("import train_student\nfrom train_teacher import main\n"
                      "def f():\n    import importlib\n    importlib.import_module('transfer_student')\n")
    assert imported_modules(source) & ENTRY_SCRIPTS == ENTRY_SCRIPTS


def test_entry_scripts_only_call_their_module() -> None:
    for script, module in ENTRY_MODULES.items():
        tree = ast.parse((REPO / script).read_text())
        imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
        assert [(node.module, [alias.name for alias in node.names]) for node in imports] == [(module, ["main"])]


def test_options_hold_no_teacher_checkpoint(tmp_path: Path) -> None:
    """The teacher checkpoint the options name is held beside them, never among them (checkpoints
    record the options under 'opt')."""
    teacher = write_published_teacher(tmp_path / "save", "resnet8")
    opt = train_student.parse_args(["--path_t", str(teacher), "--save_folder", str(tmp_path / "save")])
    assert not {"teacher", "teacher_state", "teacher_source"} & set(vars(opt))
    assert opt.model_t == "resnet8"
    assert opt.teacher.source["arch"] == "resnet8" and "model" in opt.teacher.state
    assert train_student.run_plan(opt).identity["teacher"] == opt.teacher.source


def test_finalize_accepts_a_plain_namespace(tmp_path: Path) -> None:
    teacher = write_published_teacher(tmp_path / "save", "resnet8")
    parsed = train_student.build_parser().parse_args(["--path_t", str(teacher)])
    opt = train_student.finalize_student_args(parsed)
    assert isinstance(opt, train_student.StudentOptions) and "teacher" not in vars(opt)
    with pytest.raises(AttributeError):
        train_student.StudentOptions().teacher  # noqa: B018 (a slot left unset)
