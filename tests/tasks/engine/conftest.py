"""Helpers for engine tests: run the toy task in-process or as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TOY = Path(__file__).with_name("toy_task.py")


@pytest.fixture(autouse=True)
def _restore_torch_flags():
    """--deterministic sets process-wide flags; undo them after each in-process test."""
    yield
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = False


def toy_command(*args: str) -> list[str]:
    return [sys.executable, str(TOY), *args]


def run_toy(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        toy_command(*args), capture_output=True, text=True, timeout=timeout, env=env
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"toy task failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result
