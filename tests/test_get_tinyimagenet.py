"""data/get_tinyimagenet.sh against a local HTTP server serving a generated zip."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dataset import load_dataset
from helpers import serve_folder

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "data" / "get_tinyimagenet.sh"
WNIDS = ["n01443537", "n01444537", "n01445537"]

pytestmark = pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")


@pytest.fixture(scope="module")
def server(tinyimagenet_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Serve good.zip and truncated.zip over http://127.0.0.1; yields the base URL."""
    served = tmp_path_factory.mktemp("served")
    shutil.copy(tinyimagenet_zip, served / "good.zip")
    content = tinyimagenet_zip.read_bytes()
    (served / "truncated.zip").write_bytes(content[: len(content) * 2 // 3])
    with serve_folder(served) as url:
        yield url


def _run(data_dir: Path, url: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHON": sys.executable, "TINYIMAGENET_URL": url, **env}
    environment["DATA_DIR"] = str(data_dir)
    return subprocess.run(["sh", str(SCRIPT)], cwd=REPO, env=environment, capture_output=True, text=True, timeout=120)


def test_downloads_sorts_and_is_idempotent(server: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = _run(data_dir, f"{server}/good.zip")
    assert result.returncode == 0, result.stderr
    root = data_dir / "tiny-imagenet-200"
    for wnid in WNIDS:
        assert len(list((root / "train" / wnid).glob("*.JPEG"))) == 4
        assert not (root / "train" / wnid / "images").exists()
        assert len(list((root / "val" / wnid).glob("*.JPEG"))) == 2
    assert not (root / "val" / "images").exists()
    assert (root / ".prepared").is_file()
    assert not list(data_dir.glob(".*staging*")) and not list(data_dir.glob("*.part"))

    again = _run(data_dir, "http://127.0.0.1:9/unreachable.zip")  # no download is attempted
    assert again.returncode == 0, again.stderr
    assert "already prepared" in again.stdout

    data = load_dataset("tinyimagenet", data_dir)
    assert data.num_classes == 3 and data.num_train == 12 and data.num_test == 6
    assert sorted(data.test_labels.tolist()) == [0, 0, 1, 1, 2, 2]


def test_truncated_zip_fails_loudly_and_recovers(server: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = _run(data_dir, f"{server}/truncated.zip")
    assert result.returncode != 0
    assert "corrupt" in result.stderr
    assert not (data_dir / "tiny-imagenet-200").exists()
    assert not (data_dir / "tiny-imagenet-200.zip").exists()  # deleted, so a new run downloads afresh
    retry = _run(data_dir, f"{server}/good.zip")
    assert retry.returncode == 0, retry.stderr
    assert (data_dir / "tiny-imagenet-200" / ".prepared").is_file()


def test_checksum_and_unreachable_url(server: str, tinyimagenet_zip: Path, tmp_path: Path) -> None:
    wrong = _run(tmp_path / "wrong", f"{server}/good.zip", TINYIMAGENET_SHA256="0" * 64)
    assert wrong.returncode != 0 and "sha256" in wrong.stderr
    assert not (tmp_path / "wrong" / "tiny-imagenet-200").exists()
    digest = hashlib.sha256(tinyimagenet_zip.read_bytes()).hexdigest()
    right = _run(tmp_path / "right", f"{server}/good.zip", TINYIMAGENET_SHA256=digest)
    assert right.returncode == 0, right.stderr
    missing = _run(tmp_path / "missing", f"{server}/no_such_file.zip")
    assert missing.returncode != 0 and "failed" in missing.stderr
    assert not (tmp_path / "missing" / "tiny-imagenet-200").exists()


def test_runs_from_anywhere_and_defaults_to_its_own_folder(server: str, tmp_path: Path) -> None:
    copy = tmp_path / "checkout" / "data" / "get_tinyimagenet.sh"
    copy.parent.mkdir(parents=True)
    shutil.copy(SCRIPT, copy)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    environment = {key: value for key, value in os.environ.items() if key != "DATA_DIR"}
    environment.update(TINYIMAGENET_URL=f"{server}/good.zip", PYTHON=sys.executable)
    result = subprocess.run(["sh", "../checkout/data/get_tinyimagenet.sh"], cwd=elsewhere, env=environment,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (copy.parent / "tiny-imagenet-200" / ".prepared").is_file()
    assert not (elsewhere / "tiny-imagenet-200").exists()


def test_existing_unprepared_tree_is_not_touched(server: str, tmp_path: Path) -> None:
    (tmp_path / "tiny-imagenet-200" / "train").mkdir(parents=True)
    result = _run(tmp_path, f"{server}/good.zip")
    assert result.returncode != 0 and "not prepared by this script" in result.stderr
    assert (tmp_path / "tiny-imagenet-200" / "train").is_dir()


def test_failed_download_says_only_what_happened(server: str, tmp_path: Path) -> None:
    """No progress meter or retry noise; a partial file is mentioned only when one was kept."""
    offline = _run(tmp_path / "offline", "http://127.0.0.1:9/tiny-imagenet-200.zip")
    assert offline.returncode != 0
    assert "partial" not in offline.stderr and not list((tmp_path / "offline").glob("*.part"))
    assert "% Total" not in offline.stderr and "retry" not in offline.stderr.lower()
    assert len([line for line in offline.stderr.splitlines() if line.strip()]) <= 2, offline.stderr  # curl + ours
    part = tmp_path / "kept" / "tiny-imagenet-200.zip.part"
    part.parent.mkdir()
    part.write_bytes(b"half a zip")
    kept = _run(tmp_path / "kept", "http://127.0.0.1:9/tiny-imagenet-200.zip")
    assert kept.returncode != 0 and "partial download is kept" in kept.stderr and part.is_file()
