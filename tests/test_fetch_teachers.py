"""scripts/fetch_pretrained_teachers.sh against a local HTTP server serving both layouts: an archive
like mdistiller's cifar_teachers.tar, and RepDistiller's one file per teacher (valid, corrupt and
missing teachers); an unreachable host; and the default source (a stand-in curl records the URL)."""
from __future__ import annotations

import hashlib
import json
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

from helper.provenance import weights_digest
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


def _record(save_dir: Path) -> dict[str, dict]:
    """The fetch record, by arch."""
    document = json.loads((save_dir / "published_teachers.json").read_text())
    return {entry["arch"]: entry for entry in document["teachers"]}


def test_archive_layout(mirror: str, tmp_path: Path) -> None:
    url = f"{mirror}/cifar_teachers.tar"
    result = _fetch(tmp_path / "models", "resnet56 vgg13 wrn_40_2 resnet110", TEACHERS_URL=url)
    output = _check_outcome(result, tmp_path / "models", url)
    assert f"resnet110: {url} holds no resnet110_vanilla/ckpt_epoch_240.pth" in output
    assert output.count("downloading") == 1  # one archive for every teacher
    record = _record(tmp_path / "models")
    assert sorted(record) == ["resnet56", "vgg13"]  # what was fetched and loads, nothing else
    for arch, entry in record.items():
        path = tmp_path / "models" / f"{arch}_vanilla" / "ckpt_epoch_240.pth"
        assert entry["file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry["weights_digest"] == weights_digest(torch.load(path, weights_only=True)["model"])
        assert entry["source"] == url


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


def test_a_file_put_in_place_by_hand_is_not_recorded(mirror: str, tmp_path: Path) -> None:
    """A loadable file the script did not fetch and no published checksum confirms stays, with a note, and
    is not added to the record; --print-digests prints its checksums."""
    save_dir = tmp_path / "models"
    placed = write_published_teacher(tmp_path, "resnet56", seed=3)  # tmp_path/models/resnet56_vanilla/...
    result = _fetch(save_dir, "resnet56", TEACHERS_URL="http://127.0.0.1:9/unreachable.tar")
    assert result.returncode == 0, result.stdout + result.stderr  # in place: nothing to download
    assert "is present and loads, but it is not confirmed as the published file" in result.stdout
    assert "note: present but not confirmed as the published files: resnet56" in result.stdout
    assert not (save_dir / "published_teachers.json").exists()

    printed = subprocess.run(["sh", str(SCRIPT), "--print-digests"], cwd=REPO, capture_output=True, text=True,
                             env={**os.environ, "SAVE_DIR": str(save_dir), "TEACHERS": "resnet56 vgg13",
                                  "PYTHON": sys.executable}, timeout=120)
    assert printed.returncode == 0, printed.stderr
    (line,) = printed.stdout.splitlines()
    assert json.loads(line) == {"arch": "resnet56", "file_sha256": hashlib.sha256(placed.read_bytes()).hexdigest(),
                                "weights_digest": weights_digest(torch.load(placed, weights_only=True)["model"]),
                                "path": str(placed)}


def test_a_file_that_contradicts_the_published_checksum(tmp_path: Path) -> None:
    """resnet32x4 has a published SHA-256: a download that differs is deleted and reported, a file already in
    place that differs is left alone (it may be the user's own) and reported as failed; neither is recorded."""
    root = tmp_path / "mirror"
    write_published_teacher(root, "resnet32x4")
    save_dir = tmp_path / "models"
    with serve_folder(root) as url:
        result = _fetch(save_dir, "resnet32x4", TEACHERS_URL=f"{url}/models")
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 1, output
    assert "is not the published resnet32x4 teacher: its SHA-256" in output
    assert "differs from the published 22aa12e2b632b19ddde155ccf2388671842ddd304824b3095e0a7fff364beb4f" in output
    assert "so it was deleted" in output and not (save_dir / "resnet32x4_vanilla").exists()
    assert not (save_dir / "published_teachers.json").exists()

    placed = write_published_teacher(tmp_path, "resnet32x4", seed=1)  # into save_dir
    (save_dir / "published_teachers.json").write_text("{damaged")
    again = _fetch(save_dir, "resnet32x4", TEACHERS_URL="http://127.0.0.1:9/unreachable.tar")
    output = " ".join((again.stdout + again.stderr).split())
    assert again.returncode == 1 and placed.is_file(), output
    assert "It was left in place, as it may be a teacher of your own" in output
    assert "published_teachers.json' is damaged" in output and not (save_dir / "published_teachers.json").exists()
