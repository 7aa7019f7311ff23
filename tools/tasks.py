"""The command line's table: the tasks, and which function runs each (verb, task).

Everything here is a name, imported only when its command runs, so ``resvision --help`` never
imports torch. A new task is one line in ``TASKS`` plus its lines in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from resvision.tasks.engine.errors import ConfigError

if TYPE_CHECKING:
    from resvision.tasks.engine.task import Task

# task name -> "package.module:TaskClass" (its package also holds config.PRESETS)
TASKS = {
    "detection": "resvision.tasks.detection.task:DetectionTask",
    "face": "resvision.tasks.face.task:FaceTask",
    "face-detection": "resvision.tasks.face_detection.task:FaceDetectionTask",
    "segmentation": "resvision.tasks.segmentation.task:SegmentationTask",
}

# Every command: (verb, name) -> "module:Command" in resvision.tools. A verb with names groups
# them (``resvision predict detection``, ``resvision face search``); a name of None makes the
# verb a command itself (``resvision train TASK``, ``resvision demo``). The order is --help's.
COMMANDS = {
    ("backbones", None): "backbones_cmd:BACKBONES",
    ("train", None): "train_cmd:TRAIN",
    ("eval", None): "train_cmd:EVAL",
    ("plot", None): "train_cmd:PLOT",
    ("predict", "detection"): "predict:DETECTION",
    ("predict", "segmentation"): "predict:SEGMENTATION",
    ("predict", "face"): "predict:FACE",
    ("predict", "face-detection"): "predict:FACE_DETECTION",
    ("export", "detection"): "export_cmd:DETECTION",
    ("export", "segmentation"): "export_cmd:SEGMENTATION",
    ("export", "face"): "export_cmd:FACE",
    ("export", "face-detection"): "export_cmd:FACE_DETECTION",
    ("benchmark", "detection"): "benchmark_cmd:DETECTION",
    ("benchmark", "segmentation"): "benchmark_cmd:SEGMENTATION",
    ("benchmark", "face"): "benchmark_cmd:FACE",
    ("benchmark", "face-detection"): "benchmark_cmd:FACE_DETECTION",
    ("benchmark", "depth"): "benchmark_cmd:DEPTH",
    ("benchmark", "gallery"): "benchmark_cmd:GALLERY",
    ("benchmark", "predict"): "benchmark_cmd:PREDICT",
    ("face", "embed"): "predict:FACE",
    ("face", "search"): "face_cmd:SEARCH",
    ("face", "verify"): "face_cmd:VERIFY",
    ("face", "cluster"): "face_cmd:CLUSTER",
    ("face", "ijb"): "ijb_cmd:IJB",
    ("face", "convert"): "face_cmd:CONVERT",
    ("face", "gallery"): "gallery_cmd:GALLERY",
    ("demo", None): "demo:DEMO",
    ("depth", "gradients"): "depth_cmd:GRADIENTS",
    ("depth", "degradation"): "depth_cmd:DEGRADATION",
}

# the help of the verbs that group commands: (one line, description)
VERBS = {
    "predict": (
        "run a trained model on images and write the results",
        "Run a trained model on images and write the results: `resvision predict TASK --help` "
        "lists the task's options.",
    ),
    "export": (
        "export a trained model (ONNX) and check it against PyTorch",
        "Export a trained model (ONNX) and check it against PyTorch: `resvision export TASK "
        "--help` lists the task's options.",
    ),
    "benchmark": (
        "time training and inference against the reference implementation",
        "Time training and inference against the reference implementation: `resvision "
        "benchmark NAME --help` lists the benchmark's options.",
    ),
    "face": (
        "face pipeline: embed, search, verify, cluster, ijb, convert, gallery",
        "The face-embedding pipeline.",
    ),
    "depth": (
        "what the shortcut does: gradients by block, the degradation experiment",
        "Measure what the residual connection does: gradient norms block by block with and "
        "without shortcuts, and He et al.'s degradation experiment (plain vs residual nets of "
        "several depths, same recipe).",
    ),
}


def task_names(extra: Mapping[str, Task] | None = None) -> list[str]:
    return sorted(set(TASKS) | set(extra or {}))


def get_task(name: str, extra: Mapping[str, Task] | None = None) -> Task:
    """The task named ``name`` (an extra one, as the tests' toy task, or a built-in one)."""
    if extra and name in extra:
        return extra[name]
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; choose one of {task_names(extra)}")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)()


@dataclass(frozen=True)
class TaskConfigs:
    """What configuring a task needs, read from its config module without importing torch (so
    that ``--print-config`` answers at once): its presets (the first is the default) and its
    config class."""

    name: str
    presets: Mapping[str, Callable[[], Any]]
    default: str
    config_class: type


def task_configs(name: str, extra: Mapping[str, Task] | None = None) -> TaskConfigs:
    if extra and name in extra:
        task = extra[name]
        return TaskConfigs(name, task.presets(), task.default_preset, task.config_class)
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; choose one of {task_names(extra)}")
    package = TASKS[name].split(":")[0].rsplit(".", 1)[0]
    presets = importlib.import_module(f"{package}.config").PRESETS
    default = next(iter(presets))
    return TaskConfigs(name, presets, default, type(presets[default]()))


def preset_names(name: str, extra: Mapping[str, Task] | None = None) -> list[str]:
    """The task's presets (the default first)."""
    return list(task_configs(name, extra).presets)


def command(verb: str, name: str | None = None) -> Command:
    """The ``Command`` that runs ``resvision VERB [NAME]``."""
    module, attribute = COMMANDS[(verb, name)].split(":")
    return getattr(importlib.import_module(f"resvision.tools.{module}"), attribute)


class Command:
    """One command: its help line, its options and the function that runs it
    (``run(args) -> exit code``). Modules that define commands import nothing heavy at module
    level: the parser is built for ``--help`` without torch. ``add_arguments(p)`` adds the
    options; with ``takes_tasks`` it is ``add_arguments(p, tasks)`` (the extra tasks, as the
    tests' toy task, beside the built-in ones)."""

    def __init__(
        self,
        help: str,
        add_arguments,
        run,
        *,
        description: str = "",
        passthrough: bool = False,
        takes_tasks: bool = False,
    ) -> None:
        self.help = help
        self.description = description or help
        self.add_arguments = add_arguments
        self.run = run
        self.passthrough = passthrough  # every argument after the task goes to `run` as it is
        self.takes_tasks = takes_tasks


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default once: not when the help text already speaks of it, and not
    for empty defaults (None, False, [])."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)
