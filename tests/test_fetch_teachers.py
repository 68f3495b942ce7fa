"""scripts/fetch_pretrained_teachers.sh against a local HTTP server serving both layouts: an archive
like mdistiller's cifar_teachers.tar, and RepDistiller's one file per teacher (valid, corrupt and
missing teachers); an unreachable host; and the default source (a stand-in curl records the URL)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from helpers import serve_folder, write_published_teacher

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "fetch_pretrained_teachers.sh"
DEFAULT_URL = "https://github.com/megvii-research/mdistiller/releases/download/checkpoints/cifar_teachers.tar"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("sh") is None or shutil.which("curl") is None,
                                 reason="needs a POSIX sh and curl")]


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Serves, under one URL: repo/ (per-file: valid resnet56 and vgg13, corrupt wrn_40_2, no resnet110)
    and cifar_teachers.tar (the same files under cifar_teachers/, as mdistiller's release has them)."""
    root = tmp_path_factory.mktemp("mirror")
    for arch in ("resnet56", "vgg13"):
        write_published_teacher(root, arch)
    corrupt = root / "models" / "wrn_40_2_vanilla" / "ckpt_epoch_240.pth"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"<html>not a checkpoint</html>" * 100)
    (root / "models").rename(root / "repo")
    with tarfile.open(root / "cifar_teachers.tar", "w") as archive:
        archive.add(root / "repo", arcname="cifar_teachers")
    with serve_folder(root) as url:
        yield url


def _fetch(save_dir: Path, teachers: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("TEACHERS_URL", "TEACHER_BASE_URL")}
    environment.update(SAVE_DIR=str(save_dir), TEACHERS=teachers, PYTHON=sys.executable, **env)
    return subprocess.run(["sh", str(SCRIPT)], cwd=REPO, env=environment, capture_output=True, text=True,
                          timeout=180)


def _check_outcome(result: subprocess.CompletedProcess[str], save_dir: Path, source: str) -> str:
    """resnet56 and vgg13 land and load; corrupt wrn_40_2 is deleted; resnet110 is reported missing."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    for arch in ("resnet56", "vgg13"):
        path = save_dir / f"{arch}_vanilla" / "ckpt_epoch_240.pth"
        assert torch.load(path, weights_only=True)["epoch"] == 240, output
    assert not list(save_dir.rglob("*.part")) and not list(save_dir.glob(".*")), output
    assert f"wrn_40_2: the file from {source}" in output and "deleted" in output
    assert not (save_dir / "resnet110_vanilla").exists() and not (save_dir / "wrn_40_2_vanilla").exists()
    (summary,) = [line for line in result.stdout.splitlines() if "summary:" in line]
    fetched, present, failed = (part.split(":")[1].split() for part in summary.split("summary:")[1].split(";"))
    assert (fetched, present, sorted(failed)) == (["resnet56", "vgg13"], ["none"], ["resnet110", "wrn_40_2"])
    return output


def test_archive_layout(mirror: str, tmp_path: Path) -> None:
    url = f"{mirror}/cifar_teachers.tar"
    result = _fetch(tmp_path / "models", "resnet56 vgg13 wrn_40_2 resnet110", TEACHERS_URL=url)
    output = _check_outcome(result, tmp_path / "models", url)
    assert f"resnet110: {url} holds no resnet110_vanilla/ckpt_epoch_240.pth" in output
    assert output.count("downloading") == 1  # one archive for every teacher


def test_per_file_layout_then_skip_offline(mirror: str, tmp_path: Path) -> None:
    save_dir = tmp_path / "models"
    result = _fetch(save_dir, "resnet56 vgg13 wrn_40_2 resnet110", TEACHERS_URL=f"{mirror}/repo/")
    output = _check_outcome(result, save_dir, f"{mirror}/repo/wrn_40_2_vanilla/ckpt_epoch_240.pth")
    assert f"resnet110: downloading {mirror}/repo/resnet110_vanilla/ckpt_epoch_240.pth failed" in output

    again = _fetch(save_dir, "resnet56 vgg13", TEACHERS_URL="http://127.0.0.1:9/unreachable.tar")
    assert again.returncode == 0, again.stdout + again.stderr  # all present: nothing is downloaded
    assert "fetched: none; already present: resnet56 vgg13; failed: none" in again.stdout


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/cifar_teachers.tar", "http://127.0.0.1:9/repo"])
def test_unreachable_host_stops_at_once_with_one_message(url: str, tmp_path: Path) -> None:
    started = time.monotonic()
    result = _fetch(tmp_path / "models", "resnet56 vgg13", TEACHERS_URL=url)
    assert time.monotonic() - started < 30
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # one paragraph, no repeated curl noise
    assert f"cannot reach the host of {url}" in lines[0] and "curl: (7)" in lines[0]
    assert "TEACHERS_URL" in lines[0] and "ckpt_epoch_240.pth yourself" in lines[0]
    assert result.stdout.count("downloading") == 1  # stopped at the first failure
    assert not list((tmp_path / "models").rglob("*.pth*")) and not list((tmp_path / "models").glob(".*"))


@pytest.mark.parametrize("env,requested", [
    ({}, DEFAULT_URL),
    ({"TEACHERS_URL": "https://mirror.example/r"}, "https://mirror.example/r/resnet56_vanilla/ckpt_epoch_240.pth"),
    ({"TEACHER_BASE_URL": "http://host.example/r/"}, "http://host.example/r/resnet56_vanilla/ckpt_epoch_240.pth"),
], ids=["default", "TEACHERS_URL", "TEACHER_BASE_URL"])
def test_source_and_curl_call(env: dict[str, str], requested: str, tmp_path: Path) -> None:
    """Which URL is asked for, and how: a stand-in curl records its arguments and fails like an
    offline machine (no real network)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "curl_args"
    fake = bin_dir / "curl"
    fake.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\necho "curl: (6) Could not resolve host: example" >&2\n'
                    "exit 6\n")
    fake.chmod(0o755)
    result = _fetch(tmp_path / "models", "resnet56 vgg13",
                    PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **env)
    calls = log.read_text().splitlines()
    assert len(calls) == 1 and calls[0].split()[-1] == requested, calls  # one try, no retry loop
    for flag in ("--fail", "--show-error", "--connect-timeout"):
        assert flag in calls[0].split()
    assert "--retry" not in calls[0]
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Could not resolve host: example" in result.stderr
