"""Shared fixtures: the sample photos of ../shared/data and a seeded RNG."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(autouse=True)
def _offline_and_seeded(monkeypatch):
    """No test downloads anything; every test starts from the same RNG state."""
    monkeypatch.setenv("RESVISION_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """``$RESVISION_SAMPLES`` (set by .ci/run): skip when unset, fail when set but missing."""
    value = os.environ.get("RESVISION_SAMPLES")
    if not value:
        pytest.skip("RESVISION_SAMPLES is not set (the sample photos live in ../shared/data)")
    path = Path(value)
    if not (path / "voc2011-sample").is_dir():
        pytest.fail(f"RESVISION_SAMPLES={value} does not hold voc2011-sample/")
    return path


@pytest.fixture(scope="session")
def voc_sample(samples_dir: Path) -> Path:
    return samples_dir / "voc2011-sample"
