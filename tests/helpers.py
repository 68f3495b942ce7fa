"""Test utilities shared by the end-to-end tests (not fixtures: plain functions)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, *args: str, cwd: Path, timeout: float = 300,
               check: bool = True) -> subprocess.CompletedProcess:
    """Run an entry script as a subprocess, exactly as a user would from the shell."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    result = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, timeout=timeout,
                            capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed ({result.returncode}):\nSTDOUT:\n{result.stdout}\n"
                             f"STDERR:\n{result.stderr}")
    return result


def write_published_teacher(save_folder: Path, arch: str = "resnet8", num_classes: int = 100,
                            seed: int = 0) -> Path:
    """A teacher checkpoint in the published RepDistiller format (no 'arch' key) at
    <save_folder>/models/<arch>_vanilla/ckpt_epoch_240.pth."""
    from models import model_dict

    torch.manual_seed(seed)
    model = model_dict[arch](num_classes=num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    path = save_folder / "models" / f"{arch}_vanilla" / "ckpt_epoch_240.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 240, "model": model.state_dict(), "accuracy": 70.0,
                "optimizer": optimizer.state_dict()}, path)
    return path
