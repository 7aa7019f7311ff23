"""An arcface_torch backbone.pth loads into the face model and gives the same embeddings."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from resvision.tasks.engine.config import apply_overrides
from resvision.tasks.face.config import PRESETS
from resvision.tasks.face.model import build_embedder

from ...conftest import FIXTURES


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
        got = model(images)
    # Two implementations through 20 layers: equal here (the same operations in the same order),
    # 5e-7 of the largest value apart with ATen's native convolutions or channels_last, so the
    # bound, relative to that value, leaves 200x for other CPUs' kernels. The FC's bias
    # dropped by the head moves the embedding by 0.02 (relative).
    error = float((got - expected).abs().max() / expected.abs().max())
    assert error < 1e-4, error
    # the file itself is a checkpoint wherever a face one is taken (face embed, face ijb, ...)
    from resvision.tasks.face.model import load_model

    loaded, loaded_cfg, meta = load_model(tmp_path / "backbone.pth", device="cpu")
    assert (loaded_cfg.model.backbone, loaded_cfg.model.embedding_size) == ("iresnet18", 512)
    assert loaded_cfg.data.image_size == 112 and loaded_cfg.model.weights is None
    assert meta == {"source": str(tmp_path / "backbone.pth")}
    with torch.no_grad():
        assert torch.equal(loaded(images), got)


def test_the_trunk_starts_the_same_whatever_the_number_of_identities():
    """The embedder is built before the margin classifier, so under one seed its initial
    weights do not depend on ``data.num_classes`` (and equal those of earlier versions: a
    classifier built first shifted every trunk weight and moved the demo's figure)."""
    from resvision.tasks.face.model import build_training_model

    trunks = []
    for identities in (10, 200):
        cfg = apply_overrides(PRESETS["iresnet18_synthetic"](), [f"data.num_classes={identities}"])
        torch.manual_seed(0)
        trunks.append(build_training_model(cfg).embedder.state_dict())
        torch.manual_seed(0)
        alone = build_embedder(cfg).state_dict()
        assert all(torch.equal(v, alone[k]) for k, v in trunks[-1].items())
    assert all(torch.equal(v, trunks[1][k]) for k, v in trunks[0].items())
