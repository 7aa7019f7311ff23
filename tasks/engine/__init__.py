"""The training engine every task shares: configs, the loop, checkpoints, DDP, logging, plots.

Names are imported on first use (``from resvision.tasks.engine import train``), so that
importing a light submodule such as ``engine.errors`` does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "OptimConfig": "config",
    "RuntimeConfig": "config",
    "ScheduleConfig": "config",
    "apply_overrides": "config",
    "load_yaml": "config",
    "save_yaml": "config",
    "to_dict": "config",
    "CheckpointError": "errors",
    "ConfigError": "errors",
    "DataError": "errors",
    "NonFiniteLossError": "errors",
    "TrainResult": "loop",
    "evaluate": "loop",
    "evaluate_checkpoint": "loop",
    "load_model_weights": "loop",
    "train": "loop",
    "EvalContext": "task",
    "Task": "task",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
