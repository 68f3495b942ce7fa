"""Smoke test of bench/throughput.py: a 2-step run of the real training step, default vs seed configuration."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("method", ["kd", "crd"])
def test_throughput_two_steps(method: str, tmp_path: Path) -> None:
    out = tmp_path / "records.json"
    env = dict(os.environ, DISTILLERS_BENCH_CACHE=str(tmp_path / "cache"))
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "throughput.py"), "--distill", method, "--model_t", "resnet8",
         "--model_s", "resnet8", "--steps", "2", "--warmup", "1", "--rounds", "1", "--n_train", "640",
         "--nce_k", "64", "--num_workers", "0", "--device", "cpu", "--configs", "default,seed,classic",
         "--epochs", "1", "--json-out", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, result.stdout
    variants = [line for line in lines if "images_per_s" in line]
    assert [v["config"] for v in variants] == ["default", "seed", "classic"], variants
    assert {v.get("loader") for v in variants} == {"classic", "fast"}, variants
    assert variants[1]["seed_step"] and not variants[1]["channels_last"] and not variants[0]["compile"]
    for variant in variants:
        assert variant["images_per_s"] > 0 and 0 <= variant["data_wait_fraction"] <= 1
    assert out.is_file()
