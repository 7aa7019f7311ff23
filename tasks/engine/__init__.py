"""The training engine every task shares: configs, the loop, checkpoints, DDP, logging, plots.

Names are imported on first use (``from resvision.tasks.engine import train``), so that
importing a light submodule such as ``engine.errors`` does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # _EXPORTS' names, for editors, type checkers and grep
    from .checkpoint import Progress as Progress
    from .checkpoint import load_checkpoint as load_checkpoint
    from .checkpoint import load_for_inference as load_for_inference
    from .checkpoint import load_model_weights as load_model_weights
    from .config import OptimConfig as OptimConfig
    from .config import RuntimeConfig as RuntimeConfig
    from .config import ScheduleConfig as ScheduleConfig
    from .config import apply_overrides as apply_overrides
    from .config import load_yaml as load_yaml
    from .config import save_yaml as save_yaml
    from .config import to_dict as to_dict
    from .errors import CheckpointError as CheckpointError
    from .errors import ConfigError as ConfigError
    from .errors import DataError as DataError
    from .errors import NonFiniteLossError as NonFiniteLossError
    from .evaluation import evaluate as evaluate
    from .evaluation import evaluate_checkpoint as evaluate_checkpoint
    from .loop import TrainResult as TrainResult
    from .loop import train as train
    from .runtime import amp_dtype as amp_dtype
    from .runtime import autocast as autocast
    from .runtime import resolve_device as resolve_device
    from .task import EvalContext as EvalContext
    from .task import Evaluator as Evaluator
    from .task import Task as Task

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
