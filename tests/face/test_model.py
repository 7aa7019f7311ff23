"""Face model: arcface_torch checkpoints, margin losses, Partial FC, alignment."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from resvision.datasets.face import ARCFACE_TEMPLATE, estimate_norm, norm_crop, template_for
from resvision.heads.margin import ARCFACE, COSFACE, CombinedMarginLoss, PartialFC
from resvision.tasks.engine.config import apply_overrides
from resvision.tasks.face.config import PRESETS
from resvision.tasks.face.model import build_embedder

from ..conftest import FIXTURES


def _arcface_forward(sd: dict, x: torch.Tensor, layers: list[int]) -> torch.Tensor:
    """arcface_torch's IResNet forward written with functional ops on its state_dict."""

    def bn(t, p):
        return F.batch_norm(
            t,
            sd[p + ".running_mean"],
            sd[p + ".running_var"],
            sd[p + ".weight"],
            sd[p + ".bias"],
            False,
            0.0,
            1e-5,
        )

    x = F.prelu(bn(F.conv2d(x, sd["conv1.weight"], padding=1), "bn1"), sd["prelu.weight"])
    for i, n in enumerate(layers, start=1):
        for j in range(n):
            p = f"layer{i}.{j}"
            stride = 2 if j == 0 else 1
            out = bn(x, p + ".bn1")
            out = F.conv2d(out, sd[p + ".conv1.weight"], padding=1)
            out = F.prelu(bn(out, p + ".bn2"), sd[p + ".prelu.weight"])
            out = bn(F.conv2d(out, sd[p + ".conv2.weight"], stride=stride, padding=1), p + ".bn3")
            identity = (
                bn(F.conv2d(x, sd[p + ".downsample.0.weight"], stride=stride), p + ".downsample.1")
                if j == 0
                else x
            )
            x = out + identity
    x = torch.flatten(bn(x, "bn2"), 1)
    x = F.linear(x, sd["fc.weight"], sd["fc.bias"])
    return F.batch_norm(
        x,
        sd["features.running_mean"],
        sd["features.running_var"],
        sd["features.weight"],
        sd["features.bias"],
        False,
        0.0,
        1e-5,
    )


def test_arcface_torch_backbone_pth_loads_with_the_same_output(tmp_path):
    spec = json.loads((FIXTURES / "arcface_torch_iresnet_keys.json").read_text())["models"][
        "iresnet18"
    ]
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, shape in spec.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(100)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(shape, generator=g) + 0.5
        elif k == "features.weight":
            sd[k] = torch.ones(shape)  # arcface_torch fixes this scale at 1
        else:
            sd[k] = torch.randn(shape, generator=g) * (
                0.05
                if k.endswith("conv1.weight") or "conv2" in k or "fc" in k or "downsample.0" in k
                else 0.2
            )
    torch.save(sd, tmp_path / "backbone.pth")
    cfg = apply_overrides(
        PRESETS["iresnet18_synthetic"](),
        [
            f"model.weights={tmp_path / 'backbone.pth'}",
            "model.embedding_size=512",
            "model.input_size=112",
            "data.image_size=112",
        ],
    )
    model = build_embedder(cfg).eval()
    images = torch.rand(2, 3, 112, 112) * 255
    with torch.no_grad():
        expected = _arcface_forward(sd, (images / 255 - 0.5) / 0.5, [2, 2, 2, 2])
        torch.testing.assert_close(model(images), expected, rtol=1e-4, atol=1e-4)


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
    torch.testing.assert_close(loss, expected)
    sampled = PartialFC(margin, 16, 400, sample_rate=0.1)
    value = sampled(emb, labels)
    value.backward()
    assert torch.isfinite(value)
    rows = sampled.weight.grad.abs().sum(1) > 0
    assert rows[labels].all() and int(rows.sum()) <= 40  # positives always scored, 10% in all


def test_norm_crop_matches_the_similarity_formula_on_a_real_face():
    from skimage import data
    from skimage.transform import SimilarityTransform

    image = data.astronaut()
    landmarks = np.array(
        [[175.0, 109.0], [222.0, 108.0], [203.0, 140.0], [180.0, 168.0], [217.0, 166.0]], np.float32
    )
    for size in (112, 224, 128):
        tform = SimilarityTransform()
        tform.estimate(landmarks, template_for(size))
        expected = __import__("cv2").warpAffine(
            image, tform.params[:2], (size, size), borderValue=0.0
        )
        np.testing.assert_allclose(estimate_norm(landmarks, size), tform.params[:2], atol=1e-6)
        got = norm_crop(image, landmarks, size).astype(int)
        # the matrices agree to 1e-6: bilinear rounding may differ by one grey level, rarely
        assert np.abs(got - expected).max() <= 1 and (got != expected).mean() < 0.01
    np.testing.assert_allclose(
        template_for(128), ARCFACE_TEMPLATE * (128 / 128) + [8, 0], atol=1e-5
    )
    np.testing.assert_allclose(template_for(112)[0], [38.2946, 51.6963], atol=1e-4)
    with pytest.raises(ValueError, match="multiples of 112 or 128"):
        template_for(100)
