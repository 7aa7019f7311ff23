"""Configs: typed overrides with helpful errors, YAML round trip, the train command's options."""

from __future__ import annotations

import pytest
import yaml

from resvision.tasks.engine.config import apply_overrides, load_yaml, save_yaml, to_dict
from resvision.tasks.engine.errors import ConfigError
from resvision.tools.cli import main

from .toy_task import ToyConfig, ToyTask


def test_overrides_are_parsed_by_field_type():
    cfg = apply_overrides(
        ToyConfig(),
        [
            "optim.lr=1e-3",
            "data.batch_size=4",
            "runtime.amp=off",
            "runtime.deterministic=yes",
            "schedule.steps=100,200",
            "optim.clip_grad_norm=none",
            "optim.betas=[0.8, 0.9]",
            "model.backbone=resnet34",
        ],
    )
    assert cfg.optim.lr == 0.001 and cfg.data.batch_size == 4 and cfg.runtime.amp == "off"
    assert cfg.runtime.deterministic is True and cfg.schedule.steps == (100, 200)
    assert cfg.optim.clip_grad_norm is None and cfg.optim.betas == (0.8, 0.9)
    assert apply_overrides(cfg, ["optim.clip_grad_norm=5"]).optim.clip_grad_norm == 5.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "optim.lrr=0.1",
            r"unknown config key optim\.lrr; valid keys in optim: optim\.name, optim\.lr",
        ),
        ("optimizer.lr=0.1", r"unknown config key optimizer\.lr; valid keys: model\.backbone"),
        ("data.batch_size=four", r"data\.batch_size='four' is not a valid int"),
        ("data.batch_size=2.5", r"is not a valid int"),
        ("runtime.amp=fp8", r"choose one of \['off', 'bf16', 'fp16'\]"),
        ("optim.betas=0.9", r"list of 2 values"),
        ("optim=sgd", r"optim is a section; set one of its keys"),
        ("optim.lr", r"must look like section\.key=value"),
    ],
)
def test_override_errors_name_keys_and_types(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(ToyConfig(), [override])


def test_yaml_round_trip(tmp_path):
    cfg = apply_overrides(ToyConfig(), ["schedule.steps=5,9", "optim.name=adamw"])
    save_yaml(cfg, tmp_path / "c.yaml")
    assert load_yaml(ToyConfig, tmp_path / "c.yaml") == cfg
    (tmp_path / "bad.yaml").write_text("optim:\n  lr: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        load_yaml(ToyConfig, tmp_path / "bad.yaml")


def test_train_command_resolves_preset_config_sets_and_flags(tmp_path, capsys):
    tasks = {"toy": ToyTask()}
    (tmp_path / "run.yaml").write_text(
        yaml.safe_dump({"optim": {"lr": 0.5}, "data": {"batch_size": 2}})
    )
    argv = [
        "train",
        "toy",
        "--config",
        str(tmp_path / "run.yaml"),
        "--set",
        "data.batch_size=3",
        "--amp",
        "bf16",
        "--seed",
        "7",
        "--data.num_train",
        "40",
        "--print-config",
    ]
    assert main(argv, tasks=tasks) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert (
        cfg["optim"]["lr"] == 0.5
        and cfg["data"]["batch_size"] == 3
        and cfg["data"]["num_train"] == 40
    )
    assert cfg["runtime"]["amp"] == "bf16" and cfg["runtime"]["seed"] == 7
    assert cfg["runtime"]["output_dir"] == "runs/toy/toy"
    assert to_dict(ToyConfig())["model"] == cfg["model"]
    # user errors: one line and exit code 2
    assert main(["train", "toy", "--set", "optim.lrr=1"], tasks=tasks) == 2
    assert "valid keys in optim" in capsys.readouterr().err
    assert main(["train", "toy", "--preset", "nope"], tasks=tasks) == 2
    assert "unknown preset 'nope' for toy; choose one of ['toy']" in capsys.readouterr().err
    assert (
        main(["train", "toy", "--resume", "--output-dir", str(tmp_path / "none")], tasks=tasks) == 2
    )
    assert "nothing to resume" in capsys.readouterr().err


def test_help_explains_options_with_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"], tasks={"toy": ToyTask()})
    out = capsys.readouterr().out
    assert "--resume" in out and "--amp {off,bf16,fp16}" in out and "default:" in out
