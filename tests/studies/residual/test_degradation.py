"""``resvision depth degradation``: the experiment's machinery, at a tiny size."""

from __future__ import annotations

import json
import math

import pytest

from resvision.studies.residual import degradation as D
from resvision.tools.cli import main

TINY = ["--depths", "20,32", "--iterations", "3", "--batch-size", "8", "--num-train", "16"]
TINY += ["--num-val", "8", "--warmup-iterations", "1", "--size", "16"]


def test_degradation_command_trains_plain_and_residual_nets_and_writes_curves(tmp_path, capsys):
    assert main(["depth", "degradation", *TINY, "--output-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    for label in ("plain-20", "plain-32", "ResNet-20", "ResNet-32"):
        assert label in text
    assert "final training loss" in text
    record = json.loads((tmp_path / "degradation.json").read_text())
    curves = record["curves"]
    assert [(c["depth"], c["plain"]) for c in curves] == [
        (20, True),
        (32, True),
        (20, False),
        (32, False),
    ]
    assert all(len(c["loss"]) == 3 and all(math.isfinite(v) for v in c["loss"]) for c in curves)
    assert (tmp_path / "degradation.png").stat().st_size > 10_000
    assert main(["depth", "degradation", *TINY, "--output-dir", str(tmp_path)]) == 2  # no overwrite
    assert (
        main(["depth", "degradation", "--depths", "21", "--output-dir", str(tmp_path / "x")]) == 2
    )
    assert "20, 32, 44, 56, 110, 1202" in capsys.readouterr().err


def test_same_recipe_and_seed_give_the_same_curve():
    cfg = D.DegradationConfig(
        depths=(20,),
        iterations=2,
        batch_size=4,
        num_train=8,
        num_val=4,
        warmup_iterations=1,
        size=16,
    )
    data = D.SyntheticClassification(8, size=16, seed=0).tensors()
    val = D.SyntheticClassification(4, size=16, seed=1).tensors()
    a = D.train_one(20, True, data, val, cfg)
    b = D.train_one(20, True, data, val, cfg)
    assert a.loss == b.loss and a.error == b.error
    assert D.train_one(20, False, data, val, cfg).loss != a.loss  # the shortcuts change it


def test_verdict_reads_the_final_losses():
    def curve(depth, plain, loss):
        return D.Curve(depth, plain, loss=[loss] * 10, error=[0.5] * 10)

    curves = [
        curve(20, True, 0.5),
        curve(56, True, 0.9),
        curve(20, False, 0.5),
        curve(56, False, 0.4),
    ]
    assert D.verdict(curves) == [
        "plain: deeper is worse (final training loss plain-20 0.500, plain-56 0.900)",
        "residual: deeper is no worse (final training loss ResNet-20 0.500, ResNet-56 0.400)",
    ]
    with pytest.raises(ValueError, match="1202"):
        D.check_config(D.DegradationConfig(depths=(18,)))


def test_residual_only_with_zero_initialised_branches(tmp_path, capsys):
    argv = ["depth", "degradation", *TINY, "--variants", "residual", "--zero-init-residual"]
    assert main([*argv, "--output-dir", str(tmp_path)]) == 0
    assert "residual, residual branches zero-initialised" in capsys.readouterr().out
    curves = json.loads((tmp_path / "degradation.json").read_text())["curves"]
    assert [(c["depth"], c["plain"]) for c in curves] == [(20, False), (32, False)]
    model = D._Classifier(20, plain=False, zero_init_residual=True)
    assert model.backbone.layer1[0].bn2.weight.abs().sum() == 0
    with pytest.raises(ValueError, match="plain, residual or both"):
        D.check_config(D.DegradationConfig(variants=("deep",)))
