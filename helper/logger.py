"""Per-run logging: ``metrics.csv`` (one row per epoch) and tensorboard via ``torch.utils.tensorboard``."""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any


class RunLogger:
    """Appends epoch rows to ``metrics.csv`` and scalars to tensorboard.

    On resume, rows after ``resume_epoch`` are dropped so the file equals an uninterrupted run's.
    """

    def __init__(self, run_dir: Path, tb_dir: Path | None, columns: list[str], resume_epoch: int = 0,
                 filename: str = "metrics.csv") -> None:
        self.path = Path(run_dir) / filename
        self.columns = columns
        self._truncate(resume_epoch)
        self.writer = None
        if tb_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(tb_dir), purge_step=resume_epoch + 1 if resume_epoch else None)

    def _truncate(self, resume_epoch: int) -> None:
        rows: list[dict[str, Any]] = []
        if self.path.exists() and resume_epoch > 0:
            with open(self.path, newline="") as handle:
                rows = [row for row in csv.DictReader(handle) if int(row["epoch"]) <= resume_epoch]
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)

    def log_epoch(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore").writerow(
                {key: _format(value) for key, value in row.items()})
        if self.writer is not None:
            epoch = int(row["epoch"])
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, epoch)
            self.writer.flush()

    def log_step(self, scalars: dict[str, float], global_step: int) -> None:
        if self.writer is not None:
            for key, value in scalars.items():
                self.writer.add_scalar(f"step/{key}", value, global_step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _format(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value
