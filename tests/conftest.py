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


@pytest.fixture
def faiss_one_thread():
    """faiss on one thread, for tests of logic on small arrays (``pytestmark =
    pytest.mark.usefixtures("faiss_one_thread")``): there OpenMP's threads only wait for each
    other, and on a loaded 2-core machine their spinning made a 600-face index build take
    14.6 s instead of 0.11 s."""
    faiss = pytest.importorskip("faiss")
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)
