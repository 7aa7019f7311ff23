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
    "Progress": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_for_inference": "checkpoint",
    "load_model_weights": "checkpoint",
    "TrainResult": "loop",
    "train": "loop",
    "evaluate": "evaluation",
    "evaluate_checkpoint": "evaluation",
    "amp_dtype": "runtime",
    "autocast": "runtime",
    "resolve_device": "runtime",
    "EvalContext": "task",
    "Evaluator": "task",
    "Task": "task",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
