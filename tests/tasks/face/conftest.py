"""A face run trained on synthetic identities, shared by the tests of the face commands."""

from __future__ import annotations

import pytest

from resvision.tools.cli import main


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("face_run")
    argv = [
        "train",
        "face",
        "--output-dir",
        str(out),
        "--set",
        "schedule.iterations=120",
        "schedule.warmup_iterations=30",
        "runtime.eval_period=40",
        "data.synthetic_val_pairs=300",
        "runtime.tensorboard=false",
    ]
    assert main(argv) == 0
    return out
