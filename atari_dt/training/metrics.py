"""Training metrics: ``metrics.jsonl`` (one JSON object per logged step) and TensorBoard events
(``tb/``), with names namespaced as ``train/loss``, ``eval/return@20``. Resuming drops the lines
logged after the checkpoint it resumes from, so every step appears once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from atari_dt.io import atomic_write_bytes

METRICS = "metrics.jsonl"


class MetricsLog:
    """Appends metrics of rank 0; a no-op on other ranks (``enabled=False``)."""

    def __init__(self, run_dir: Path, *, start_step: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = run_dir / METRICS
        self._tensorboard: Any = None
        if not enabled:
            return
        _truncate_after(self.path, start_step)
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events at steps >= it: what a killed run wrote after the checkpoint
        # we resume from (which itself stays, as it does in metrics.jsonl).
        self._tensorboard = SummaryWriter(str(run_dir / "tb"), purge_step=start_step + 1)

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as out:
            out.write(json.dumps({"step": step, **values}) + "\n")
        for name, value in values.items():
            self._tensorboard.add_scalar(name, value, step)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every logged line of a run, in order."""
    path = run_dir / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_after(path: Path, step: int) -> None:
    """Keep only the lines of steps <= ``step`` (a fresh run, step 0, keeps none)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
    atomic_write_bytes(path, "".join(f"{line}\n" for line in kept).encode())
