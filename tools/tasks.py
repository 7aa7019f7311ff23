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

# task name -> its package (which holds config.PRESETS and task.<Name>Task)
TASKS = {
    "detection": "resvision.tasks.detection",
    "face": "resvision.tasks.face",
    "face-detection": "resvision.tasks.face_detection",
    "segmentation": "resvision.tasks.segmentation",
}

# (verb, task) -> "module:Command" in resvision.tools; train, eval and plot serve every task
COMMANDS = {
    ("predict", "detection"): "predict:DETECTION",
    ("predict", "segmentation"): "predict:SEGMENTATION",
    ("predict", "face"): "predict:FACE",
    ("export", "detection"): "export_cmd:DETECTION",
    ("export", "segmentation"): "export_cmd:SEGMENTATION",
    ("export", "face"): "export_cmd:FACE",
    ("benchmark", "detection"): "benchmark_cmd:DETECTION",
    ("benchmark", "segmentation"): "benchmark_cmd:SEGMENTATION",
    ("benchmark", "face"): "benchmark_cmd:FACE",
    ("predict", "face-detection"): "face_detection_cmd:PREDICT",
    ("export", "face-detection"): "face_detection_cmd:EXPORT",
    ("benchmark", "face-detection"): "face_detection_cmd:BENCHMARK",
    ("benchmark", "depth"): "benchmark_cmd:DEPTH",
    ("benchmark", "gallery"): "benchmark_cmd:GALLERY",
}


def task_names(extra: Mapping[str, Task] | None = None) -> list[str]:
    return sorted(set(TASKS) | set(extra or {}))


def task_class_name(name: str) -> str:
    return f"{name.title().replace('-', '').replace('_', '')}Task"


def get_task(name: str, extra: Mapping[str, Task] | None = None) -> Task:
    """The task named ``name`` (an extra one, as the tests' toy task, or a built-in one)."""
    if extra and name in extra:
        return extra[name]
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; choose one of {task_names(extra)}")
    module = importlib.import_module(f"{TASKS[name]}.task")
    return getattr(module, task_class_name(name))()


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
    presets = importlib.import_module(f"{TASKS[name]}.config").PRESETS
    default = next(iter(presets))
    return TaskConfigs(name, presets, default, type(presets[default]()))


def preset_names(name: str, extra: Mapping[str, Task] | None = None) -> list[str]:
    """The task's presets (the default first)."""
    return list(task_configs(name, extra).presets)


def command(verb: str, task: str) -> Any:
    """The ``Command`` that runs ``resvision VERB TASK``."""
    module, attribute = COMMANDS[(verb, task)].split(":")
    return getattr(importlib.import_module(f"resvision.tools.{module}"), attribute)


class Command:
    """One ``resvision VERB TASK`` command: its help line, its options and the function that
    runs it (``run(args) -> exit code``). Modules that define commands import nothing heavy at
    module level: the parser is built for ``--help`` without torch."""

    def __init__(
        self, help: str, add_arguments, run, *, description: str = "", passthrough: bool = False
    ) -> None:
        self.help = help
        self.description = description or help
        self.add_arguments = add_arguments
        self.run = run
        self.passthrough = passthrough  # every argument after the task goes to `run` as it is


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default once: not when the help text already speaks of it, and not
    for empty defaults (None, False, [])."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)
