"""Progress and metrics: a step meter (clips/s, data-wait fraction), a progress bar, and the
per-epoch log (OUT/metrics.csv, TensorBoard when it is installed). Rank 0 only. Progress bars
come from :mod:`pipeline.progress`, shared by every command."""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["StepMeter", "MetricsLog"]

METRIC_COLUMNS = (
    "epoch",
    "lr",
    "train_loss",
    "train_ce",
    "train_gate",
    "train_mean_gate",
    "train_top1",
    "val_top1",
    "val_top5",
    "val_mean_gate",
    "clips_per_s",
    "data_wait",
    "epoch_seconds",
    "read_errors",
)


@dataclass
class StepMeter:
    """Time split between waiting for data and computing, and clips processed."""

    clips_per_step: int
    wait: float = 0.0
    total: float = 0.0
    steps: int = 0
    _mark: float = field(default_factory=time.perf_counter)
    _got: float = 0.0

    def got_batch(self) -> None:
        now = time.perf_counter()
        self.wait += now - self._mark
        self._got = now

    def step_done(self) -> None:
        now = time.perf_counter()
        self.total += now - self._mark
        self._mark = now
        self.steps += 1

    @property
    def clips_per_s(self) -> float:
        return self.steps * self.clips_per_step / max(self.total, 1e-9)

    @property
    def wait_fraction(self) -> float:
        return self.wait / max(self.total, 1e-9)


class MetricsLog:
    """OUT/metrics.csv (one row per epoch) and TensorBoard scalars under OUT/tb."""

    def __init__(self, out_dir: str, resume_epoch: int = 0) -> None:
        self.path = os.path.join(out_dir, "metrics.csv")
        rows: list[dict[str, Any]] = []
        if resume_epoch and os.path.exists(self.path):
            # Keep the epochs the resumed checkpoint contains; later rows belong to the run
            # that was interrupted and will be written again.
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= resume_epoch]
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(os.path.join(out_dir, "tb"), purge_step=resume_epoch + 1)
        except ImportError:  # tensorboard is an optional extra
            pass

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=METRIC_COLUMNS).writerow(
                {k: _fmt(row.get(k)) for k in METRIC_COLUMNS}
            )
        if self.tb is not None:
            for k, v in row.items():
                if k != "epoch" and isinstance(v, int | float):
                    self.tb.add_scalar(k, v, row["epoch"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else v
