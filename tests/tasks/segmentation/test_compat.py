"""State dicts of smp and torchvision models load into resvision models and give the same logits.

Seeded random weights (batch-norm statistics included) stand in for trained ones.
"""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch
import torchvision

from resvision.tasks.engine.config import apply_overrides
from resvision.tasks.segmentation import SegmentationTask
from resvision.tasks.segmentation.config import PRESETS


def _randomize(model: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def assert_same_logits(got: torch.Tensor, expected: torch.Tensor) -> None:
    """The largest difference relative to the largest logit. Both models are float32 runs of
    one network through 40 to 60 layers, and oneDNN picks its kernels by CPU, thread count,
    shape and memory format: measured with 1 and 2 threads, channels_last and ATen's native
    convolutions, 8e-6 at most (the U-Net, whose randomized statistics make logits of 300),
    2e-6 for the DeepLabs. The bound keeps 25x of headroom for other CPUs' kernels and sits far
    below a real difference: the stem's ReLU lost moves the U-Net's logits by 1.3e-2, the final
    upsampling's align_corners flipped the DeepLabs' by 0.25, smp's uniform dilation not
    applied DeepLabV3+'s by 0.55."""
    error = float((got - expected).abs().max() / expected.abs().max())
    assert error < 2e-4, error


def _ours(preset: str, weights, *overrides):
    task = SegmentationTask()
    cfg = apply_overrides(
        PRESETS[preset](), [f"model.weights={weights}", "data.source=synthetic", *overrides]
    )
    if cfg.model.num_classes == 0:  # follows the (synthetic) data
        cfg = task.finalize_config(cfg, None)
    return task.build_model(cfg).eval()


def test_smp_unet_resnet34_state_dict(tmp_path):
    ref = _randomize(smp.Unet("resnet34", encoder_weights=None, classes=5))
    torch.save(ref.state_dict(), tmp_path / "unet.pth")
    ours = _ours("unet_r34_512x512", tmp_path / "unet.pth", "model.num_classes=5")
    x = torch.rand(2, 3, 64, 96) * 255
    with torch.no_grad():
        expected = ref(ours.backbone.normalization.normalize(x))
        got = ours(x)["out"]
    assert_same_logits(got, expected)


def test_smp_deeplabv3plus_resnet50_state_dict(tmp_path):
    ref = _randomize(smp.DeepLabV3Plus("resnet50", encoder_weights=None, classes=5))
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "dlv3p.pth")
    ours = _ours("deeplabv3plus_r50_smp", tmp_path / "dlv3p.pth", "model.num_classes=5")
    x = torch.rand(1, 3, 64, 80) * 255
    with torch.no_grad():
        expected = ref(ours.backbone.normalization.normalize(x))
        got = ours(x)["out"]
    assert_same_logits(got, expected)


@pytest.mark.slow
def test_torchvision_deeplabv3_resnet50_state_dict(tmp_path):
    ref = _randomize(
        torchvision.models.segmentation.deeplabv3_resnet50(
            weights=None, weights_backbone=None, num_classes=21, aux_loss=True
        )
    )
    torch.save(ref.state_dict(), tmp_path / "tv.pth")
    ours = _ours("deeplabv3_resnet50_torchvision", tmp_path / "tv.pth")
    x = torch.rand(1, 3, 75, 61) * 255  # odd size: no padding is involved
    with torch.no_grad():
        expected = ref(ours.backbone.normalization.normalize(x))
        got = ours(x)
    assert_same_logits(got["out"], expected["out"])
    assert_same_logits(got["aux"], expected["aux"])


def test_backbone_only_weights_still_load_through_the_same_option(tmp_path):
    tv = torchvision.models.resnet18(weights=None)
    torch.save(tv.state_dict(), tmp_path / "r18.pth")
    ours = _ours("unet_r18_synthetic", tmp_path / "r18.pth")
    torch.testing.assert_close(
        ours.backbone.state_dict()["layer2.0.conv1.weight"],
        tv.state_dict()["layer2.0.conv1.weight"],
    )


def test_a_mismatched_whole_model_is_refused_with_a_hint(tmp_path):
    ref = smp.Unet("resnet34", encoder_weights=None, classes=3)
    torch.save(ref.state_dict(), tmp_path / "unet.pth")
    with pytest.raises(ValueError, match=r"model\.num_classes"):
        _ours("unet_r34_512x512", tmp_path / "unet.pth", "model.num_classes=5")
