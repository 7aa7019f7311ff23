"""The shared training engine, exercised through the tests' toy task."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time

import pytest
import torch

from resvision.tasks.engine.checkpoint import load_checkpoint
from resvision.tasks.engine.config import apply_overrides
from resvision.tasks.engine.errors import NonFiniteLossError
from resvision.tasks.engine.loop import train

from .conftest import run_toy, toy_command
from .toy_task import ToyConfig, ToyTask


def _cfg(tmp_path, *overrides):
    return apply_overrides(
        ToyConfig(), [f"runtime.output_dir={tmp_path}", "runtime.tensorboard=false", *overrides]
    )


def _weights(path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_training_writes_run_folder_and_learns(tmp_path):
    result = train(ToyTask(), _cfg(tmp_path, "schedule.iterations=24", "runtime.tensorboard=true"))
    assert result.iteration == 24 and result.stopped_by is None
    assert result.metrics["val/accuracy"] > 0.6  # 4 classes: chance is 0.25
    for name in (
        "last.pt",
        "best.pt",
        "config.yaml",
        "metrics.jsonl",
        "plots/loss.png",
        "plots/lr.png",
        "plots/val.png",
    ):
        assert (tmp_path / name).is_file(), name
    assert any((tmp_path / "tb").iterdir())
    state = torch.load(tmp_path / "last.pt", weights_only=True)  # loadable safely
    assert {
        "model",
        "optimizer",
        "scheduler",
        "scaler",
        "ema",
        "progress",
        "rng",
        "config",
        "meta",
    } <= set(state)
    assert state["progress"]["iteration"] == 24 and state["meta"]["class_names"][0] == "quadrant0"
    records = _metrics(tmp_path)
    train_rec = [r for r in records if "loss" in r]
    assert [r["iteration"] for r in train_rec] == list(range(1, 25))
    assert {
        "loss_cls",
        "loss_l2",
        "lr",
        "images_per_s",
        "data_time_share",
        "peak_memory_gb",
    } <= set(train_rec[0])
    assert any("val/accuracy" in r for r in records)


def test_lr_schedule_and_auto_scaling(tmp_path):
    cfg = _cfg(
        tmp_path,
        "schedule.iterations=12",
        "schedule.warmup_iterations=4",
        "schedule.steps=[8]",
        "data.batch_size=4",
        "optim.lr=0.08",
        "optim.reference_batch_size=8",
    )
    train(ToyTask(), cfg)
    lrs = {r["iteration"]: r["lr"] for r in _metrics(tmp_path) if "lr" in r}
    peak = 0.08 * 4 / 8  # linear scaling by total batch
    assert lrs[1] == pytest.approx(peak * 0.001)  # warmup starts at warmup_factor
    assert lrs[4] == pytest.approx(peak * (0.001 * 0.25 + 0.75))
    assert lrs[5] == pytest.approx(peak) and lrs[8] == pytest.approx(peak)
    assert lrs[9] == pytest.approx(peak * 0.1)  # multistep at iteration 8


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    """Kill a deterministic CPU run with SIGKILL at a random iteration, resume, compare weights."""
    common = [
        "train",
        "toy",
        "--deterministic",
        "--seed",
        "3",
        "--set",
        "schedule.iterations=30",
        "runtime.checkpoint_period=2",
        "runtime.tensorboard=false",
        "data.batch_size=6",
    ]
    run_toy(*common, "--output-dir", str(tmp_path / "ref"))
    killed = tmp_path / "killed"
    kill_at = random.Random().randint(4, 24)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        toy_command(*common, "--output-dir", str(killed)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        log = killed / "metrics.jsonl"
        if log.exists() and any(
            json.loads(x).get("iteration", 0) >= kill_at
            for x in log.read_text().splitlines()
            if x.strip()
        ):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    stopped_at = load_checkpoint(killed / "last.pt")["progress"]["iteration"]
    assert 0 < stopped_at < 30
    out = run_toy(*common, "--output-dir", str(killed), "--resume")
    assert f"at iteration {stopped_at}" in out.stdout + out.stderr
    ref, resumed = _weights(tmp_path / "ref" / "last.pt"), _weights(killed / "last.pt")
    assert ref.keys() == resumed.keys()
    for key in ref:
        assert torch.equal(ref[key], resumed[key]), key
    # the metrics log has no duplicated iterations after the resume
    its = [r["iteration"] for r in _metrics(killed) if "loss" in r]
    assert its == sorted(set(its)) and its[-1] == 30


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(tmp_path):
    cmd = toy_command(
        "train",
        "toy",
        "--set",
        "schedule.iterations=100000",
        "runtime.checkpoint_period=1000000",
        "runtime.tensorboard=false",
        "--output-dir",
        str(tmp_path),
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "metrics.jsonl").exists():
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr
    assert "stopped by SIGTERM" in stdout
    state = load_checkpoint(tmp_path / "last.pt")
    assert 0 < state["progress"]["iteration"] < 100000


def test_corrupt_checkpoint_is_a_clear_error_and_never_replaces_the_good_one(tmp_path, monkeypatch):
    train(ToyTask(), _cfg(tmp_path, "schedule.iterations=4"))
    good = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(good[: len(good) // 3])
    with pytest.raises(ValueError, match=r"cut\.pt.*truncated or corrupt.*last\.pt"):
        load_checkpoint(tmp_path / "cut.pt")
    # a crash in the middle of writing leaves the previous checkpoint intact
    from resvision.tasks.engine import checkpoint as ckpt
    from resvision.tasks.engine import files

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(tmp_path / "last.pt", {"model": {"w": torch.zeros(3)}})
    assert (tmp_path / "last.pt").read_bytes() == good
    assert not list(tmp_path.glob(".last.pt.tmp-*"))
    # a checkpoint of another task is refused by name
    with pytest.raises(ValueError, match="toy checkpoint, not a detection one"):
        load_checkpoint(tmp_path / "last.pt", task="detection")


def test_nonfinite_losses_are_skipped_then_stop_training(tmp_path):
    task = ToyTask()
    # two NaN steps: skipped and counted, training goes on
    result = train(
        task,
        _cfg(tmp_path / "a", "schedule.iterations=8", "model.nan_from_call=2", "model.nan_calls=2"),
    )
    assert result.skipped_steps == 2 and result.iteration == 8
    w = _weights(tmp_path / "a" / "last.pt")
    assert all(torch.isfinite(v).all() for v in w.values() if v.is_floating_point())
    # five in a row: a message naming the step, the terms and what to try
    with pytest.raises(NonFiniteLossError) as err:
        train(
            task,
            _cfg(
                tmp_path / "b",
                "schedule.iterations=20",
                "model.nan_from_call=3",
                "runtime.max_nonfinite=5",
            ),
        )
    msg = str(err.value)
    assert (
        "iteration 7" in msg
        and "loss_cls=nan" in msg
        and "optim.lr" in msg
        and "clip_grad_norm" in msg
    )


def test_amp_bf16_on_cpu_and_gradient_clipping_and_ema(tmp_path):
    result = train(
        ToyTask(),
        _cfg(
            tmp_path,
            "schedule.iterations=16",
            "runtime.amp=bf16",
            "runtime.ema=true",
            "runtime.ema_decay=0.9",
            "optim.clip_grad_norm=1.0",
            "runtime.channels_last=true",
        ),
    )
    assert result.skipped_steps == 0
    assert {"val/accuracy", "val_ema/accuracy"} <= set(result.metrics)
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["ema"]["updates"] == 16
    differs = [
        k
        for k in state["model"]
        if state["model"][k].is_floating_point()
        and not torch.equal(state["model"][k], state["ema"]["module"][k])
    ]
    assert differs  # the average is not a copy of the weights


def test_gradient_accumulation_matches_a_larger_batch(tmp_path):
    """2 x 4 accumulated equals one batch of 8 (frozen BN: batch statistics would differ)."""
    base = [
        "schedule.iterations=3",
        "model.norm=frozen_bn",
        "model.dropout=0",
        "optim.auto_scale_lr=false",
        "runtime.deterministic=true",
    ]
    train(ToyTask(), _cfg(tmp_path / "big", *base, "data.batch_size=8"))
    train(ToyTask(), _cfg(tmp_path / "acc", *base, "data.batch_size=4", "optim.accumulate_steps=2"))
    a, b = _weights(tmp_path / "big" / "last.pt"), _weights(tmp_path / "acc" / "last.pt")
    # two sums of the same gradients in another order (and convolutions of other batch shapes):
    # every tensor within 1e-7 of its largest value (measured with 1 and 2 threads); the loss
    # not divided by the accumulation steps (gradients doubled) moves the stem by 0.03 and the
    # head by 0.25
    for key in a:
        value, other = a[key].double(), b[key].double()
        error = float((value - other).abs().max() / value.abs().max().clamp(min=1e-30))
        assert error < 1e-4, (key, error)


def test_eval_command_and_plot_command(tmp_path, capsys):
    from resvision.tools.cli import main

    train(ToyTask(), _cfg(tmp_path, "schedule.iterations=4"))
    tasks = {"toy": ToyTask()}
    assert (
        main(
            ["eval", "toy", "--checkpoint", str(tmp_path), "--json", str(tmp_path / "m.json")],
            tasks=tasks,
        )
        == 0
    )
    assert json.loads((tmp_path / "m.json").read_text())["count"] == 32
    assert "accuracy:" in capsys.readouterr().out
    (tmp_path / "plots" / "loss.png").unlink()
    assert main(["plot", str(tmp_path)], tasks=tasks) == 0
    assert (tmp_path / "plots" / "loss.png").is_file()
    # a user mistake is one line, not a traceback
    assert main(["eval", "toy", "--checkpoint", str(tmp_path / "nope.pt")], tasks=tasks) == 2
    assert "does not exist" in capsys.readouterr().err


def test_best_checkpoint_follows_the_configured_metric(tmp_path):
    """``runtime.best_metric`` names the figure that selects best.pt (the toy evaluator's
    constant ``count`` keeps the first evaluation, where accuracy would pick the best
    accuracy); a name the evaluation does not give is an error listing the ones it does."""
    common = ("schedule.iterations=4", "runtime.eval_period=2", "runtime.progress=false")
    train(ToyTask(), _cfg(tmp_path / "count", *common, "runtime.best_metric=count"))
    best = torch.load(tmp_path / "count" / "best.pt", weights_only=True)["progress"]
    count = next(r["val/count"] for r in _metrics(tmp_path / "count") if "val/count" in r)
    assert best["best_iteration"] == 2 and best["best_metric"] == count
    with pytest.raises(ValueError, match=r"runtime.best_metric='mAP'.*\['accuracy', 'count'\]"):
        train(ToyTask(), _cfg(tmp_path / "typo", *common, "runtime.best_metric=mAP"))
