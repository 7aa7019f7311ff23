"""Tiny trained runs of every task, shared by the command tests of this folder (trained once per
session: a few seconds each on a CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from resvision.tasks.engine.config import apply_overrides
from resvision.tasks.engine.loop import train
from resvision.tools.tasks import get_task

from ..tasks.tiny import TINY


def _run(tmp_path_factory, name: str) -> Path:
    preset, overrides = TINY[name]
    out = tmp_path_factory.mktemp(f"{name}_run")
    task = get_task(name)
    extra = ["schedule.iterations=2", "schedule.warmup_iterations=0", "runtime.eval_period=2"]
    extra += ["runtime.tensorboard=false", f"runtime.output_dir={out}"]
    train(task, apply_overrides(task.presets()[preset](), [*overrides, *extra]))
    return out


@pytest.fixture(scope="session")
def seg_run(tmp_path_factory):
    return _run(tmp_path_factory, "segmentation")


@pytest.fixture(scope="session")
def det_run(tmp_path_factory):
    return _run(tmp_path_factory, "detection")


@pytest.fixture(scope="session")
def face_run(tmp_path_factory):
    return _run(tmp_path_factory, "face")
