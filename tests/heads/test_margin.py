"""Margin softmax losses (ArcFace, CosFace, combined) and Partial FC, also across processes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from resvision.heads.margin import ARCFACE, COSFACE, CombinedMarginLoss, PartialFC

CUDA = pytest.param(
    "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
)


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_margin_losses_are_fp32_with_finite_gradients_at_the_extremes(dtype, device):
    loss = CombinedMarginLoss(64.0, **ARCFACE)
    cos = torch.tensor(
        [
            [1.0, 0.2, -0.1],
            [0.9999999, 0.1, 0.0],
            [-1.0, 0.3, 0.2],
            [-0.9999, 0.0, 0.1],
            [0.3, 0.2, 0.1],
        ],
        device=device,
    )
    labels = torch.tensor([0, 0, 0, 0, 2], device=device)
    x = cos.to(dtype).requires_grad_(True)
    with torch.autocast(device, dtype=dtype):
        out = loss(x, labels)
        value = F.cross_entropy(out, labels)
    assert out.dtype == torch.float32
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad.float()).all()


def test_margin_target_logit_is_monotone_and_continuous_past_pi():
    for margins in (ARCFACE, {"m1": 1.35, "m2": 0.2, "m3": 0.1}):
        loss = CombinedMarginLoss(1.0, **margins)
        theta = torch.linspace(0, math.pi, 2001, dtype=torch.float64)
        t = loss.target_logit(torch.cos(theta))
        assert (
            t[1:] <= t[:-1] + 1e-9
        ).all()  # decreasing in the angle: never rewards a worse angle
        assert (t[1:] - t[:-1]).abs().max() < 0.01  # continuous
        inside = theta <= loss.theta0
        expected = torch.cos(margins["m1"] * theta[inside] + margins["m2"]) - margins["m3"]
        torch.testing.assert_close(t[inside][5:-5], expected[5:-5], atol=1e-5, rtol=0)


def test_zero_margin_is_normalized_softmax_and_cosface_subtracts_m():
    g = torch.Generator().manual_seed(0)
    cos = torch.rand(6, 10, generator=g) * 2 - 1
    labels = torch.randint(0, 10, (6,), generator=g)
    plain = CombinedMarginLoss(30.0, m1=1.0, m2=0.0, m3=0.0)
    torch.testing.assert_close(plain(cos, labels), 30 * cos)
    cosface = CombinedMarginLoss(30.0, **COSFACE)(cos, labels)
    expected = 30 * cos.clone()
    expected[torch.arange(6), labels] -= 30 * 0.4
    torch.testing.assert_close(cosface, expected)


def test_partial_fc_with_sample_rate_one_is_the_full_softmax():
    torch.manual_seed(0)
    margin = CombinedMarginLoss(64.0, **ARCFACE)
    pfc = PartialFC(margin, 16, 40, sample_rate=1.0)
    emb = torch.randn(8, 16, requires_grad=True)
    labels = torch.randint(0, 40, (8,))
    loss = pfc(emb, labels)
    expected = F.cross_entropy(
        margin(F.linear(F.normalize(emb), F.normalize(pfc.weight)), labels), labels
    )
    torch.testing.assert_close(loss, expected)  # the same operations: tight on any CPU
    sampled = PartialFC(margin, 16, 400, sample_rate=0.1)
    value = sampled(emb, labels)
    value.backward()
    assert torch.isfinite(value)
    rows = sampled.weight.grad.abs().sum(1) > 0
    assert rows[labels].all() and int(rows.sum()) <= 40  # positives always scored, 10% in all


def test_partial_fc_across_two_gloo_processes_equals_one_process(tmp_path):
    """Class centres split over 2 ranks give the full-softmax loss and gradients.

    The ranks score their halves with other matrix shapes and sum the softmax across processes
    in another order: the loss (60, logits scaled by 64) is 1 ulp (6e-8 relative) from one
    process's, the gradients 1e-7 of their largest value (measured with 1 and 2 threads), so
    the bounds, relative to those magnitudes, keep 100x of headroom. The softmax's
    denominator not summed across ranks puts the loss off by 0.06 to 0.2 and the gradients by
    0.9 and more."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from resvision.heads.margin import ARCFACE, CombinedMarginLoss, PartialFC

    from .pfc_worker import pfc_inputs

    worker = Path(__file__).with_name("pfc_worker.py")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29533",
        str(worker),
        str(tmp_path),
    ]
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    torch.manual_seed(0)
    full = PartialFC(CombinedMarginLoss(64.0, **ARCFACE), 8, 11)
    weight, emb, labels = pfc_inputs()
    full.weight.data.copy_(weight)
    e = emb.clone().requires_grad_(True)
    loss = full(e, labels)
    loss.backward()
    parts = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [p["weight_grad"].shape[0] for p in parts] == [6, 5]  # 11 centres sharded
    assert all(abs(p["loss"] - loss.item()) < 1e-5 * abs(loss.item()) for p in parts)

    def relative(got, expected):
        return float((got - expected).abs().max() / expected.abs().max())

    assert relative(torch.cat([p["weight_grad"] for p in parts]), full.weight.grad) < 1e-5
    # each rank fed half the batch: the gathered gradient of its embeddings is the full one
    assert relative(torch.cat([p["emb_grad"] for p in parts]), e.grad) < 1e-5
