"""torchrun with 2 gloo processes gives the same training as one process over the same batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from resvision.tasks.engine.checkpoint import load_checkpoint
from resvision.tasks.engine.data import epoch_batches, eval_batches

from .conftest import TOY, run_toy

COMMON = [
    "--deterministic",
    "--set",
    "schedule.iterations=6",
    "model.norm=frozen_bn",
    "model.dropout=0",
    "runtime.tensorboard=false",
    "runtime.checkpoint_period=3",
]


def _losses(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["iteration"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


def test_two_gloo_processes_match_one_process_over_the_same_global_batch(tmp_path):
    run_toy("train", "toy", *COMMON, "data.batch_size=8", "--output-dir", str(tmp_path / "single"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29517",
        str(TOY),
        "train",
        "toy",
        *COMMON,
        "data.batch_size=4",
        "--output-dir",
        str(tmp_path / "ddp"),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    single, ddp = _losses(tmp_path / "single"), _losses(tmp_path / "ddp")
    assert single.keys() == ddp.keys() == set(range(1, 7))
    for it in single:  # loss after K steps, averaged over ranks, equals the single-process loss
        assert abs(single[it] - ddp[it]) < 1e-4 * max(1.0, abs(single[it])), (
            it,
            single[it],
            ddp[it],
        )
    a = load_checkpoint(tmp_path / "single" / "last.pt")
    b = load_checkpoint(tmp_path / "ddp" / "last.pt")
    # the gradients of two half batches averaged by all-reduce and of the whole batch sum in
    # another order (and convolve other batch shapes): every tensor within 1.2e-7 of its
    # largest value (measured); the learning rate scaled without the process count (halved
    # under DDP) moves the stem by 0.04
    for key in a["model"]:
        value, other = a["model"][key].double(), b["model"][key].double()
        error = float((value - other).abs().max() / value.abs().max().clamp(min=1e-30))
        assert error < 1e-4, (key, error)
    assert len(b["rng"]) == 2  # every rank's RNG state is kept for an exact resume
    # evaluation gathered both ranks' shards: every validation image counted exactly once
    metrics = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [m["val/count"] for m in metrics if "val/count" in m][-1] == 32


def test_sharding_covers_the_global_batch_and_eval_has_no_repeats():
    single = epoch_batches(50, 8, seed=1, epoch=2)
    ranks = [epoch_batches(50, 4, seed=1, epoch=2, rank=r, world_size=2) for r in range(2)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 6
    for step, batch in enumerate(single):
        assert sorted(batch) == sorted(ranks[0][step] + ranks[1][step])
    assert epoch_batches(50, 8, seed=1, epoch=3) != single  # reshuffled per epoch
    grouped = epoch_batches(50, 4, seed=1, epoch=0, group_ids=[i % 3 == 0 for i in range(50)])
    assert len(grouped) == 12
    assert sum(len({i % 3 == 0 for i, _ in b}) == 1 for b in grouped) >= 10  # mostly one group
    shards = [eval_batches(11, 3, rank=r, world_size=2) for r in range(2)]
    flat = sorted(i for s in shards for b in s for i in b)
    assert flat == list(range(11))
