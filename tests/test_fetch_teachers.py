"""scripts/fetch_pretrained_teachers.sh against a local HTTP server (valid, corrupt and missing teachers)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from helpers import serve_folder, write_published_teacher

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "fetch_pretrained_teachers.sh"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("sh") is None or not (shutil.which("curl") or shutil.which("wget")),
                                 reason="needs a POSIX sh and curl or wget")]


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A mirror with valid resnet56 and vgg13 teachers, a corrupt wrn_40_2 and no resnet110; yields its URL."""
    root = tmp_path_factory.mktemp("mirror")
    for arch in ("resnet56", "vgg13"):
        write_published_teacher(root, arch)
    corrupt = root / "models" / "wrn_40_2_vanilla" / "ckpt_epoch_240.pth"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"<html>not a checkpoint</html>" * 100)
    with serve_folder(root / "models") as url:
        yield url


def _fetch(save_dir: Path, base_url: str, teachers: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TEACHER_BASE_URL": base_url, "SAVE_DIR": str(save_dir), "TEACHERS": teachers,
           "PYTHON": sys.executable}
    return subprocess.run(["sh", str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)


def test_fetch_verifies_reports_and_skips(mirror: str, tmp_path: Path) -> None:
    save_dir = tmp_path / "models"
    # a stale partial download: the server cannot resume it, so the script starts over
    stale = save_dir / "vgg13_vanilla" / "ckpt_epoch_240.pth.part"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"garbage")
    result = _fetch(save_dir, mirror + "/", "resnet56 vgg13 wrn_40_2 resnet110")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output

    for arch in ("resnet56", "vgg13"):  # valid ones land, byte-identical to the mirror's
        path = save_dir / f"{arch}_vanilla" / "ckpt_epoch_240.pth"
        assert path.is_file(), output
        assert torch.load(path, weights_only=True)["epoch"] == 240
    assert not list(save_dir.rglob("*.part")), output

    corrupt_url = f"{mirror}/wrn_40_2_vanilla/ckpt_epoch_240.pth"
    assert not (save_dir / "wrn_40_2_vanilla" / "ckpt_epoch_240.pth").exists()
    assert f"wrn_40_2: the file downloaded from {corrupt_url} is not a valid wrn_40_2 checkpoint" in output
    assert "deleted" in output
    assert f"resnet110: downloading {mirror}/resnet110_vanilla/ckpt_epoch_240.pth failed" in output
    assert not (save_dir / "resnet110_vanilla").exists() and not (save_dir / "wrn_40_2_vanilla").exists()
    assert "summary: fetched: resnet56 vgg13; already present: none; failed: wrn_40_2 resnet110" in output

    again = _fetch(save_dir, "http://127.0.0.1:9", "resnet56 vgg13")  # unreachable: nothing is downloaded
    assert again.returncode == 0, again.stdout + again.stderr
    assert "skip resnet56: already present and valid" in again.stdout
    assert "skip vgg13: already present and valid" in again.stdout
    assert "fetched: none; already present: resnet56 vgg13; failed: none" in again.stdout
