"""The training engine every task shares: configs, the loop, checkpoints, DDP, logging, plots."""

from .config import (
    OptimConfig,
    RuntimeConfig,
    ScheduleConfig,
    apply_overrides,
    load_yaml,
    save_yaml,
    to_dict,
)
from .errors import CheckpointError, ConfigError, DataError, NonFiniteLossError
from .loop import TrainResult, evaluate, evaluate_checkpoint, load_model_weights, train
from .task import EvalContext, Task

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "EvalContext",
    "NonFiniteLossError",
    "OptimConfig",
    "RuntimeConfig",
    "ScheduleConfig",
    "Task",
    "TrainResult",
    "apply_overrides",
    "evaluate",
    "evaluate_checkpoint",
    "load_model_weights",
    "load_yaml",
    "save_yaml",
    "to_dict",
    "train",
]
