"""The engine with the depth options: per-stage gradient norms in the metrics, exact resume with
stochastic depth on."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from resvision.backbones import BackboneConfig, create_backbone
from resvision.tasks.engine.checkpoint import load_checkpoint
from resvision.tasks.engine.config import apply_overrides
from resvision.tasks.engine.grad_norms import stage_grad_norms
from resvision.tasks.engine.loop import train

from .toy_task import ToyConfig, ToyTask

STAGE_KEYS = [f"grad_norm/{k}" for k in ("stem", "c2", "c3", "c4", "c5", "head", "total")]


def _cfg(tmp_path, *overrides):
    return apply_overrides(
        ToyConfig(), [f"runtime.output_dir={tmp_path}", "runtime.tensorboard=false", *overrides]
    )


def test_stage_grad_norms_group_the_backbone_by_stage_and_skip_frozen_stages():
    """The grouping is algebra, so the model runs in float64 (a flat norm and a norm of
    per-tensor norms of 0.5M float32 gradients sum in other orders, and so differ by rounding
    that depends on the CPU's vector width). The library casts the per-tensor norms to float32
    before combining them: 3e-8 from the float64 reference here, 1e-6 at worst for the 15
    float32 values of a group, and the 2e-6 bound is far below a wrong grouping (the
    backbone's gradients counted into the head's norm, or the head's norm left out of the
    total, move a norm by 4% and 71%)."""
    backbone = create_backbone("resnet18", out_levels=["c4"], frozen_stages=2).double()
    model = nn.ModuleDict({"trunk": backbone, "fc": nn.Linear(256, 3).double()})
    feats = backbone(torch.randn(2, 3, 32, 32, dtype=torch.float64))["c4"].mean((2, 3))
    model["fc"](feats).square().sum().backward()
    norms = stage_grad_norms(model)
    assert list(norms) == ["grad_norm/c3", "grad_norm/c4", "grad_norm/head", "grad_norm/total"]
    expected_c3 = torch.cat([p.grad.flatten() for p in backbone.layer2.parameters()]).norm()
    torch.testing.assert_close(norms["grad_norm/c3"].double(), expected_c3, rtol=2e-6, atol=0)
    expected_head = torch.cat([p.grad.flatten() for p in model["fc"].parameters()]).norm()
    torch.testing.assert_close(norms["grad_norm/head"].double(), expected_head, rtol=2e-6, atol=0)
    every = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    torch.testing.assert_close(norms["grad_norm/total"].double(), every.norm(), rtol=2e-6, atol=0)


def test_log_grad_norms_writes_each_stage_to_metrics_before_clipping(tmp_path):
    clip = 1e-3
    train(
        ToyTask(),
        _cfg(
            tmp_path,
            "schedule.iterations=3",
            "runtime.log_grad_norms=true",
            f"optim.clip_grad_norm={clip}",
        ),
    )
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert len(steps) == 3
    for record in steps:
        values = [record[k] for k in STAGE_KEYS]
        assert all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in values)
        parts = sum(record[k] ** 2 for k in STAGE_KEYS[:-1])
        assert math.isclose(record["grad_norm/total"] ** 2, parts, rel_tol=1e-4)
        assert record["grad_norm/total"] > 10 * clip  # measured before clipping
    # off by default
    train(ToyTask(), _cfg(tmp_path / "off", "schedule.iterations=1"))
    line = (tmp_path / "off" / "metrics.jsonl").read_text().splitlines()[0]
    assert not any(k.startswith("grad_norm/") for k in json.loads(line))


@pytest.mark.slow  # four short trainings (about 40 s on the 2-core CI box)
def test_resume_with_stochastic_depth_is_bit_identical(tmp_path):
    """Stopped at iteration 3 and resumed to 6 equals 6 straight: the drop-path masks come from
    the generator whose state the checkpoint keeps."""
    common = ["model.drop_path_rate=0.5", "runtime.deterministic=true", "data.batch_size=4"]
    common += ["data.num_train=32", "data.num_val=4", "runtime.checkpoint_period=100"]
    train(ToyTask(), _cfg(tmp_path / "ref", *common, "schedule.iterations=6"))
    train(ToyTask(), _cfg(tmp_path / "cut", *common, "schedule.iterations=3"))
    train(
        ToyTask(), _cfg(tmp_path / "cut", *common, "schedule.iterations=6"), resume=tmp_path / "cut"
    )
    ref = load_checkpoint(tmp_path / "ref" / "last.pt")["model"]
    resumed = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert resumed["progress"]["iteration"] == 6
    for key, value in ref.items():
        assert torch.equal(value, resumed["model"][key]), key
    # stochastic depth was on: without it the same run ends elsewhere
    no_drop = [c for c in common if "drop_path" not in c]
    train(ToyTask(), _cfg(tmp_path / "nodrop", *no_drop, "schedule.iterations=6"))
    other = load_checkpoint(tmp_path / "nodrop" / "last.pt")["model"]
    assert any(not torch.equal(v, other[k]) for k, v in ref.items() if v.is_floating_point())


def test_backbone_depth_options_parse_from_overrides():
    """Every task's model section (a BackboneConfig) takes the options from the command line."""

    @dataclass
    class Config:
        model: BackboneConfig = field(default_factory=BackboneConfig)

    cfg = apply_overrides(
        Config(),
        [
            "model.activation_checkpointing=c4,c5",
            "model.drop_path_rate=0.1",
            "model.zero_init_residual=false",
        ],
    )
    assert cfg.model.activation_checkpointing == ("c4", "c5")
    assert cfg.model.drop_path_rate == 0.1 and cfg.model.zero_init_residual is False
    cfg = apply_overrides(cfg, ["model.activation_checkpointing=true", "model.backbone=resnet18"])
    assert cfg.model.activation_checkpointing is True
    backbone = cfg.model.create_backbone(None)
    assert backbone.checkpointed_stages == ("c2", "c3", "c4", "c5")
    assert backbone.drop_path_rate == 0.1 and backbone.layer1[0].bn2.weight.min() > 0
