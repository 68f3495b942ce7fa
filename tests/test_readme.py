"""The README cannot drift from the code: every entry-script command line it shows parses with that
script's real argparse parser, every --flag it mentions exists, the files and modules its commands
name exist, the minimum Python it states is what the pinned packages need, and the Quick start's
lines run as pasted (generated data and teacher standing in for the downloads)."""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

import analyze
from training import student as train_student
from training import teacher as train_teacher
from training import transfer as transfer_student
from datagen import write_cifar100, write_stl10
from helpers import write_published_teacher

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "train_teacher.py": train_teacher.build_parser,
    "train_student.py": train_student.build_parser,
    "transfer_student.py": transfer_student.build_parser,
    "analyze.py": analyze.build_parser,
}
# --flags the README mentions that belong to other programs than the entry scripts: the
# repository's own modules (checked below) or outside tools
OTHER_PROGRAMS = {"--nproc_per_node": "torchrun", "--logdir": "tensorboard", "--plot": "reporting/summary.py",
                  "--format": "reporting/summary.py",
                  "--write": "reporting/method_table.py", "--print-digests": "scripts/fetch_pretrained_teachers.sh",
                  "--list": "scripts/reproduce.sh", "--table": "reporting/reproduction.py", "--cancel": "scripts/run_status.py",
                  **{flag: "sbatch" for flag in ("--partition", "--account", "--gpus-per-node", "--cpus-per-task",
                                                 "--mem", "--array", "--qos", "--constraint", "--gres")}}


def shell_lines(text: str = README) -> list[str]:
    """The lines of the README's ```sh blocks, continuations joined, comments dropped."""
    lines: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            code = re.sub(r"(^|\s)#.*$", "", line).strip()
            if code:
                lines.append(code)
    return lines


def entry_commands(text: str = README) -> list[tuple[str, str, list[str]]]:
    """(line, script, argv) for every line running one of the entry scripts."""
    found = []
    for line in shell_lines(text):
        words = shlex.split(re.sub(r"<[^>]*>", "PLACEHOLDER", line.replace("<same flags>", "")))
        for position, word in enumerate(words):
            if Path(word).name in PARSERS:
                found.append((line, Path(word).name, words[position + 1:]))
                break
    return found


def quick_start() -> str:
    return README[README.index("## Quick start"):README.index("## Data folder")]


def test_the_commands_are_found() -> None:
    scripts = {script for _, script, _ in entry_commands()}
    assert scripts == set(PARSERS)
    assert len([1 for _, script, _ in entry_commands(quick_start()) if script == "train_student.py"]) == 4


@pytest.mark.parametrize("line,script,argv", entry_commands(), ids=[line[:60] for line, _, _ in entry_commands()])
def test_every_command_line_parses(line: str, script: str, argv: list[str]) -> None:
    try:
        PARSERS[script]().parse_args(argv)
    except SystemExit as error:
        pytest.fail(f"README line does not parse with {script}'s flags ({error}): {line}")


def test_every_mentioned_flag_exists() -> None:
    known = {option for build in PARSERS.values() for action in build()._actions
             for option in action.option_strings}
    prose = re.sub(r"```python\n.*?```", "", README, flags=re.S)  # the "Add a method" example declares its own
    mentioned = set(re.findall(r"(?<![\w-])--[A-Za-z][\w-]*", prose))
    unknown = sorted(flag for flag in mentioned - known if flag not in OTHER_PROGRAMS)
    assert not unknown, f"the README mentions flags no script has: {unknown}"
    for flag, program in OTHER_PROGRAMS.items():
        if program.endswith(".py"):
            assert f'"{flag}"' in (ROOT / program).read_text(), f"{program} has no {flag}"
        elif program.endswith(".sh"):
            text = (ROOT / program).read_text()  # a test `[ "$1" = --flag ]` or a case pattern `--flag)`
            assert f"= {flag}" in text or f"    {flag})" in text, f"{program} has no {flag}"


def test_named_files_modules_and_targets_exist() -> None:
    for line in shell_lines():
        words = shlex.split(re.sub(r"<[^>]*>", "PLACEHOLDER", line))
        for index, word in enumerate(words):
            if word == "sh" and index + 1 < len(words) and words[index + 1].endswith(".sh"):
                assert (ROOT / words[index + 1]).is_file(), line
            if word == "-m" and words[index - 1].endswith("python"):
                assert importlib.util.find_spec(words[index + 1]) is not None, line
    makefile = (ROOT / "Makefile").read_text()
    for target in re.findall(r"^make (\w+)", README, flags=re.M):
        assert re.search(rf"^{target}:", makefile, flags=re.M), target


def test_the_environment_is_used_before_the_commands() -> None:
    """After `make demo`, a pasted `python ...` must find the installed packages."""
    lines = shell_lines(quick_start())
    assert lines[0] == ". .venv/bin/activate"
    assert ".venv/bin/python train_student.py" in README[:README.index("## Quick start")]


def test_minimum_python_is_what_the_pins_need() -> None:
    stated = re.search(r"`python3` (\d+)\.(\d+) or newer", README)
    assert stated, "the README states no minimum Python"
    needed = (3, 0)
    for requirement in (ROOT / "requirements.txt").read_text().splitlines():
        if "==" not in requirement or requirement.startswith("#"):
            continue
        name, version = requirement.split("==")
        try:
            if importlib.metadata.version(name) != version.strip():
                continue
            requires = importlib.metadata.metadata(name).get("Requires-Python") or ""
        except importlib.metadata.PackageNotFoundError:
            continue
        for major, minor in re.findall(r">=\s*(\d+)\.(\d+)", requires):
            needed = max(needed, (int(major), int(minor)))
    assert (int(stated[1]), int(stated[2])) == needed


@pytest.mark.slow
def test_quick_start_runs_as_pasted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The DCD+KD line, then the transfer line reading its checkpoint, each run as written (plus a short
    schedule and the generated data folder), from a folder where the fetched teacher would be."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISTILLERS_OFFLINE", "1")
    write_published_teacher(tmp_path / "save", "resnet32x4")
    data = write_stl10(write_cifar100(tmp_path / "data", n_train=64, n_test=16), n_train=40, n_test=10)
    short = ["--epochs", "1", "--batch_size", "32", "--device", "cpu", "--no_progress", "--data_folder", str(data)]
    commands = entry_commands(quick_start())
    student = next(argv for line, script, argv in commands if script == "train_student.py" and "-a 1 -b 1" in line)
    transfer = next(argv for _, script, argv in commands if script == "transfer_student.py")
    train_student.main(student + short)
    transfer_student.main(transfer + short)
    assert list((tmp_path / "save" / "transfer" / "transfer_model").glob("*/resnet8x4_last.pth"))
