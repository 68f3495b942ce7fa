"""helper.published_teachers and scripts/verify_checkpoint.py --published: a checkpoint is a published
teacher by its content (the table's checksums, or the fetch record), never by its path."""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from helper import published_teachers
from helper.errors import UserError
from helper.provenance import weights_digest
from helper.published_teachers import (PublishedTeacher, add_to_record, file_sha256, in_table, published_by_digest,
                                       read_record, table_mismatch)
from helpers import ROOT, write_published_teacher


def _verify_checkpoint():
    spec = importlib.util.spec_from_file_location("verify_checkpoint", ROOT / "scripts" / "verify_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def teacher(tmp_path: Path) -> tuple[Path, str, str]:
    """A resnet8 file at the fetch script's path, its weights digest and SHA-256 (computed here)."""
    path = write_published_teacher(tmp_path, "resnet8")
    digest = weights_digest(torch.load(path, weights_only=True)["model"])
    return path, digest, hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_table_confirms_or_contradicts_a_file(teacher, monkeypatch: pytest.MonkeyPatch) -> None:
    path, digest, sha256 = teacher
    assert file_sha256(path) == sha256
    assert table_mismatch("resnet8", digest, sha256) is None and not in_table("resnet8", digest, sha256)
    monkeypatch.setitem(published_teachers.PUBLISHED, "resnet8", PublishedTeacher(file_sha256=sha256, source="x"))
    assert in_table("resnet8", digest, sha256) and table_mismatch("resnet8", digest, sha256) is None
    other = "0" * 64
    assert table_mismatch("resnet8", digest, other) == f"its SHA-256 {other} differs from the published {sha256} (x)"
    monkeypatch.setitem(published_teachers.PUBLISHED, "resnet8", PublishedTeacher(weights_digest="f" * 16))
    assert table_mismatch("resnet8", digest, sha256).startswith(f"its weights digest {digest} differs")
    assert published_by_digest("f" * 16, []) == "resnet8 in the table of published teachers"


def test_the_record_lists_each_digest_once(tmp_path: Path) -> None:
    record = tmp_path / "published_teachers.json"
    assert read_record(record) == [] and published_by_digest("a" * 16, [record]) is None
    add_to_record(record, "resnet8", "a" * 16, "1" * 64, "https://one.example/t.tar", "loads")
    add_to_record(record, "resnet8", "a" * 16, "1" * 64, "https://two.example/t.tar", "loads")
    (entry,) = read_record(record)
    assert entry["source"] == "https://two.example/t.tar" and entry["weights_digest"] == "a" * 16
    assert published_by_digest("a" * 16, [tmp_path / "missing.json", record]) == \
        "fetched from https://two.example/t.tar by scripts/fetch_pretrained_teachers.sh"
    record.write_text(json.dumps({"teachers": {"not": "a list"}}))
    with pytest.raises(UserError, match="is damaged"):
        read_record(record)
    assert published_by_digest("a" * 16, [record]) is None


def test_verify_published_statuses(teacher, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path, digest, sha256 = teacher
    verify, record = _verify_checkpoint(), tmp_path / "models" / "published_teachers.json"
    assert verify.main(["--status", "--published", str(record), str(path), "resnet8"]) == 0
    assert capsys.readouterr().out == "resnet8 unverified\n" and not record.exists()  # in place, not fetched
    assert verify.main(["--status", "--published", str(record), "--fetched-from", "https://m.example/t.tar",
                        str(path), "resnet8"]) == 0
    assert capsys.readouterr().out == "resnet8 published\n"
    assert [(e["weights_digest"], e["file_sha256"]) for e in read_record(record)] == [(digest, sha256)]
    assert verify.main(["--status", "--published", str(record), str(path), "resnet8"]) == 0
    assert capsys.readouterr().out == "resnet8 published\n"  # now the record confirms it

    monkeypatch.setitem(published_teachers.PUBLISHED, "resnet8", PublishedTeacher(file_sha256="0" * 64))
    assert verify.main(["--status", "--published", str(record), str(path), "resnet8"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "resnet8 other\n" and "is not the published resnet8 teacher" in captured.err
