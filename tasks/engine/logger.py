"""What a person sees: metrics as JSON lines, TensorBoard events, a progress bar."""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch


class MetricsLogger:
    """Appends records to ``RUN/metrics.jsonl`` and scalars to ``RUN/tb/`` (main rank only)."""

    def __init__(self, run_dir: Path, *, enabled: bool = True, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(Path(run_dir) / "tb"))
            except ImportError:  # tensorboard is a dependency, but keep training without it
                self.writer = None

    def truncate_after(self, iteration: int) -> None:
        """On resume: drop records the interrupted run wrote after its last checkpoint."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [
            line
            for line in self.path.read_text().splitlines()
            if line.strip() and json.loads(line).get("iteration", 0) <= iteration
        ]
        self.path.write_text("".join(line + "\n" for line in kept))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: _plain(v) for k, v in record.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(clean) + "\n")
        if self.writer is not None:
            step = int(clean.get("iteration", 0))
            for key, value in clean.items():
                if key not in ("iteration", "epoch") and isinstance(value, int | float):
                    self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no nan/inf
    return value


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist: is {str(run_dir)!r} a run folder?")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory of this process: the CUDA allocator's, else the resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kb / 2**20 if sys.platform != "darwin" else kb / 2**30


class ThroughputWindow:
    """What happened since the last log record: summed loss terms of the optimizer steps taken,
    images seen, and the time spent waiting for data."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.terms: torch.Tensor | None = None
        self.steps = 0
        self.images = 0
        self.data_time = 0.0
        self.start = time.perf_counter()

    def add_step(self, terms: torch.Tensor) -> None:
        self.terms = terms if self.terms is None else self.terms + terms
        self.steps += 1

    def mean_terms(self) -> list[float] | None:
        """Mean of each loss term over the window's steps (None before the first step)."""
        return (self.terms / self.steps).tolist() if self.steps else None

    def rates(self, world_size: int) -> dict[str, float]:
        """Images per second over all processes and the share of time spent waiting for data."""
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        return {
            "images_per_s": self.images * world_size / elapsed,
            "data_time_share": self.data_time / elapsed,
        }
