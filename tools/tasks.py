"""The tasks the command line knows, imported only when used (keeps `resvision --help` fast)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from resvision.tasks.engine.errors import ConfigError

if TYPE_CHECKING:
    from resvision.tasks.engine.task import Task

BUILTIN = {
    "detection": ("resvision.tasks.detection", "DetectionTask"),
    "face": ("resvision.tasks.face", "FaceTask"),
    "segmentation": ("resvision.tasks.segmentation", "SegmentationTask"),
}


def task_names(extra: Mapping[str, Task] | None = None) -> list[str]:
    return sorted(set(BUILTIN) | set(extra or {}))


def get_task(name: str, extra: Mapping[str, Task] | None = None) -> Task:
    if extra and name in extra:
        return extra[name]
    if name not in BUILTIN:
        raise ConfigError(f"unknown task {name!r}; choose one of {task_names(extra)}")
    module, cls = BUILTIN[name]
    return getattr(importlib.import_module(module), cls)()
