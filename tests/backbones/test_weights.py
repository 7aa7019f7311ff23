"""Weight loading: parity with torchvision and timm, arcface_torch's layout, errors."""

from __future__ import annotations

import json

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from resvision.backbones import WeightsError, create_backbone
from resvision.backbones.weights import detect_layout

from ..conftest import FIXTURES


def _randomize_bn(model: torch.nn.Module) -> None:
    """Non-trivial running statistics, so that eval-mode parity tests the whole BN."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def _torchvision_trunk(tv: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    return tv.layer4(tv.layer3(tv.layer2(tv.layer1(x))))


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_torchvision_state_dict_gives_identical_c5(arch, tmp_path):
    torch.manual_seed(0)
    tv = getattr(torchvision.models, arch)(weights=None).eval()
    _randomize_bn(tv)
    path = tmp_path / f"{arch}.pth"
    torch.save(tv.state_dict(), path)
    ours = create_backbone(arch, weights=path).eval()
    assert ours.load_report.layout == "torchvision/timm"
    assert ours.load_report.dropped == ["fc.bias", "fc.weight"] or set(
        ours.load_report.dropped
    ) == {"fc.weight", "fc.bias"}
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        # exact: ours is timm's modules, which run the very operations of torchvision's
        # (conv, bn, relu, maxpool, residual add) in the same order on the same shapes
        assert torch.equal(ours(x)["c5"], _torchvision_trunk(tv, x))


def test_timm_resnet50d_state_dict_gives_identical_c5(tmp_path):
    ref = timm.create_model("resnet50d", pretrained=False).eval()
    _randomize_bn(ref)
    path = tmp_path / "resnet50d.safetensors"
    save_file(ref.state_dict(), str(path))
    ours = create_backbone("resnet50d", weights=path).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # exact: the same timm modules run in the same order
        assert torch.equal(ours(x)["c5"], ref.forward_features(x))


def test_wrapped_checkpoints_are_unwrapped(tmp_path):
    """DDP ``module.`` prefixes, ``{"model": ...}`` nesting and a detector's ``backbone.body.``."""
    tv = torchvision.models.resnet18(weights=None)
    sd = tv.state_dict()
    variants = {
        "ddp.pth": {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3},
        "nested.pt": {"model": sd, "optimizer": {"lr": torch.tensor(0.1)}},
        "detector.bin": {f"backbone.body.{k}": v for k, v in sd.items() if not k.startswith("fc")}
        | {"rpn.head.conv.weight": torch.zeros(1)},
    }
    for name, obj in variants.items():
        torch.save(obj, tmp_path / name)
        ours = create_backbone("resnet18", weights=tmp_path / name)
        torch.testing.assert_close(
            ours.state_dict()["layer3.1.conv2.weight"], sd["layer3.1.conv2.weight"]
        )


def test_openmmlab_deep_stem_is_mapped(tmp_path):
    ref = timm.create_model("resnet50d", pretrained=False)
    sd = {}
    for k, v in ref.state_dict().items():  # rename the deep stem the way mmcv's ResNetV1d does
        for timm_key, mm_key in (
            ("conv1.0.", "stem.0."),
            ("conv1.1.", "stem.1."),
            ("conv1.3.", "stem.3."),
            ("conv1.4.", "stem.4."),
            ("conv1.6.", "stem.6."),
            ("bn1.", "stem.7."),
        ):
            if k.startswith(timm_key):
                k = mm_key + k[len(timm_key) :]
        sd["backbone." + k] = v
    torch.save({"state_dict": sd, "meta": {"epoch": torch.tensor(1)}}, tmp_path / "mmseg.pth")
    ours = create_backbone("resnet50d", weights=tmp_path / "mmseg.pth")
    assert ours.load_report.layout == "openmmlab"
    torch.testing.assert_close(
        ours.state_dict()["bn1.running_var"], ref.state_dict()["bn1.running_var"]
    )


@pytest.mark.parametrize("arch", ["iresnet18", "iresnet50"])
def test_arcface_torch_layout_loads(arch, tmp_path):
    """A backbone.pth in arcface_torch's key layout (fixture: key names and shapes) loads."""
    spec = json.loads((FIXTURES / "arcface_torch_iresnet_keys.json").read_text())["models"][arch]
    g = torch.Generator().manual_seed(0)
    sd = {
        k: (
            torch.tensor(7)
            if k.endswith("num_batches_tracked")
            else torch.randn(shape, generator=g)
        )
        for k, shape in spec.items()
    }
    assert detect_layout(sd) == "arcface_torch"
    torch.save(sd, tmp_path / "backbone.pth")
    ours = create_backbone(arch, weights=tmp_path / "backbone.pth")
    report = ours.load_report
    assert not report.missing and not report.unexpected
    assert {k.split(".")[0] for k in report.dropped} == {"bn2", "fc", "features"}
    mine = ours.state_dict()
    assert set(mine) == {k for k in sd if k.split(".")[0] not in ("bn2", "fc", "features")}
    for k, v in mine.items():
        assert torch.equal(v, sd[k].to(v.dtype)), k


def test_missing_and_unexpected_keys_are_listed(tmp_path, caplog):
    sd = torchvision.models.resnet18(weights=None).state_dict()
    del sd["layer2.0.conv1.weight"]
    sd["layer2.0.extra.weight"] = torch.zeros(3)
    torch.save(sd, tmp_path / "w.pth")
    with pytest.raises(WeightsError) as err:
        create_backbone("resnet18", weights=tmp_path / "w.pth")
    msg = str(err.value)
    assert "layer2.0.conv1.weight" in msg and "layer2.0.extra.weight" in msg
    assert "strict=False" in msg and "w.pth" in msg
    with caplog.at_level("WARNING"):
        model = create_backbone("resnet18", weights=tmp_path / "w.pth", strict=False)
    assert "layer2.0.conv1.weight" in caplog.text
    torch.testing.assert_close(
        model.state_dict()["layer3.0.conv1.weight"], sd["layer3.0.conv1.weight"]
    )


def test_wrong_architecture_names_the_shapes(tmp_path):
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(WeightsError, match=r"shapes differ.*layer1\.0\.conv1\.weight"):
        create_backbone("resnet50", weights=tmp_path / "r18.pth")


def test_unsafe_truncated_and_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        create_backbone("resnet18", weights=tmp_path / "nope.pth")
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "ok.pth")
    data = (tmp_path / "ok.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="cut.pth.*truncated"):
        create_backbone("resnet18", weights=tmp_path / "cut.pth")
    torch.save(torchvision.models.resnet18(weights=None), tmp_path / "module.pth")  # pickled module
    with pytest.raises(WeightsError, match="state_dict"):
        create_backbone("resnet18", weights=tmp_path / "module.pth")


def test_named_tags_resolve_offline_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(WeightsError) as err:
        create_backbone("resnet50", weights="torchvision:IMAGENET1K_V2")
    msg = str(err.value)
    assert "resnet50-11ad3fa6.pth" in msg
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in msg
    assert "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in msg
    with pytest.raises(WeightsError, match=r"huggingface\.co/timm/resnet50\.a1_in1k"):
        create_backbone("resnet50", weights="timm:a1_in1k")
    with pytest.raises(WeightsError, match="IMAGENET1K_V1"):
        create_backbone("resnet50", weights="torchvision:NOPE")


def test_cached_torchvision_tag_loads_with_its_normalization(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    sd = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(sd, cache / "resnet18-f37072fd.pth")  # the file name torchvision's enum uses
    model = create_backbone("resnet18", weights="torchvision:IMAGENET1K_V1")
    assert model.load_report.source.endswith("resnet18-f37072fd.pth")
    assert model.normalization.mean == pytest.approx((0.485, 0.456, 0.406))
    torch.testing.assert_close(model.state_dict()["conv1.weight"], sd["conv1.weight"])


@pytest.mark.parametrize("in_channels", [1, 4, 6])
def test_in_channels_adapts_pretrained_stem(in_channels, tmp_path):
    """1 channel sums the RGB filters; more tile them and rescale by 3 / in_channels.

    The adapted stem sums its products in another order than the RGB model's (one summed
    filter, or 6 channels of halved ones): c5 differs from the reference by 1e-6 of its largest
    value (measured with 1 and 2 threads, channels_last and ATen's native convolutions), so the
    bound, relative to that value, keeps 100x of headroom for other CPUs' kernels. The filters
    averaged instead of summed (1 channel) or tiled without the rescale (6) put c5 off by
    0.24 and 0.35."""
    tv = torchvision.models.resnet18(weights=None).eval()
    _randomize_bn(tv)
    torch.save(tv.state_dict(), tmp_path / "w.pth")
    model = create_backbone("resnet18", weights=tmp_path / "w.pth", in_channels=in_channels).eval()
    assert model.load_report.adapted == ["conv1.weight"]
    w, rgb_w = model.state_dict()["conv1.weight"], tv.state_dict()["conv1.weight"]
    assert w.shape[1] == in_channels and len(model.normalization.mean) == in_channels
    if in_channels == 4:  # tiled RGB R, rescaled: the activation scale is kept
        torch.testing.assert_close(w[:, :3], rgb_w * 3 / 4)
        torch.testing.assert_close(w[:, 3], rgb_w[:, 0] * 3 / 4)
        return
    rgb = torch.rand(1, 3, 64, 64)
    x = rgb.sum(1, keepdim=True) / 3 if in_channels == 1 else rgb.repeat(1, in_channels // 3, 1, 1)
    ref_in = x.expand(1, 3, 64, 64) if in_channels == 1 else rgb
    with torch.no_grad():
        # a grey image (1 channel) or repeated RGB (6) gives the RGB model's features
        got, expected = model(x)["c5"], _torchvision_trunk(tv, ref_in)
    error = float((got - expected).abs().max() / expected.abs().max())
    assert error < 1e-4, error
