"""Whole-image vs sliding-window inference, TTA, resize-back, the predictor API."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from resvision.heads.segmentation import SegModelConfig, build_segmentation_model
from resvision.tasks.segmentation.inference import (
    InferenceConfig,
    Segmenter,
    predict_logits,
    slide_logits,
)


class Pointwise(nn.Module):
    """A per-pixel model: any window sees the same logits for a pixel as the whole image."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return {"out": self.conv(x.float() / 255)}


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest difference relative to the largest value of ``b``."""
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max())


def test_overlapping_windows_average_to_the_whole_image_result():
    """Windows convolve other shapes than the whole image and their logits are summed and
    divided where they overlap: 1.8e-7 of the largest logit apart (measured with 1 and 2
    threads and ATen's native convolutions), so the bound keeps 50x of headroom. Overlaps
    not averaged (each window's count set to 1, not added) put the logits off by 2.8."""
    model = Pointwise().eval()
    image = torch.rand(1, 3, 45, 70) * 255
    whole = model(image)["out"]
    for crop, stride, batch in [
        ((16, 16), (10, 12), 3),
        ((20, 70), (7, 7), 1),
        ((45, 30), (45, 13), 8),
    ]:
        cfg = InferenceConfig(mode="slide", crop_size=crop, stride=stride, window_batch=batch)
        assert _relative(slide_logits(model, image, cfg), whole) < 1e-5, (crop, stride)


def test_cpu_accumulation_for_large_images_gives_the_same_result():
    """As above (overlaps not averaged put the logits off by 2.8)."""
    model = Pointwise().eval()
    image = torch.rand(1, 3, 40, 40) * 255
    small = InferenceConfig(
        mode="slide", crop_size=(16, 16), stride=(12, 12), cpu_accumulate_pixels=1
    )
    assert _relative(slide_logits(model, image, small), model(image)["out"]) < 1e-5


@pytest.fixture(scope="module")
def dlv3p():
    torch.manual_seed(0)
    return build_segmentation_model(
        SegModelConfig(backbone="resnet18", output_stride=16, arch="deeplabv3plus", num_classes=3)
    ).eval()


def test_window_covering_the_image_equals_whole_image_inference(dlv3p):
    image = torch.rand(1, 3, 50, 66) * 255
    whole = predict_logits(dlv3p, image, InferenceConfig(mode="whole"))
    slide = predict_logits(
        dlv3p, image, InferenceConfig(mode="slide", crop_size=(64, 80), stride=(32, 32))
    )
    # float32's tight default tolerance holds on any CPU (equal here): one window covering the
    # image runs the model on the same shape, and adding to zeros and dividing by 1 are exact
    torch.testing.assert_close(slide, whole)


@pytest.mark.parametrize("size", [(37, 53), (64, 31), (17, 17)])
def test_any_input_size_gives_logits_at_the_original_size(dlv3p, size):
    image = torch.rand(1, 3, *size) * 255
    for cfg in [
        InferenceConfig(),
        InferenceConfig(test_size=(48, 40)),
        InferenceConfig(scales=(0.75, 1.25), flip=True),
    ]:
        out = predict_logits(dlv3p, image, cfg)
        assert out.shape == (1, 3, *size)
    probs = predict_logits(dlv3p, image, InferenceConfig(scales=(0.75, 1.25), flip=True))
    torch.testing.assert_close(probs.sum(1), torch.ones(1, *size))  # averaged probabilities


def test_flip_tta_of_a_flip_equivariant_model_changes_nothing():
    model = Pointwise().eval()
    image = torch.rand(1, 3, 20, 24) * 255
    plain = predict_logits(model, image, InferenceConfig()).softmax(1)
    tta = predict_logits(model, image, InferenceConfig(flip=True))
    torch.testing.assert_close(tta, plain)


def test_segmenter_takes_paths_arrays_and_tensors(dlv3p, tmp_path):
    import cv2

    rgb = (np.random.default_rng(0).random((33, 47, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    seg = Segmenter(dlv3p, ["a", "b", "c"])
    out = seg.predict([tmp_path / "a.png", rgb, torch.from_numpy(rgb).permute(2, 0, 1)])
    assert [o.shape for o in out] == [(33, 47)] * 3
    assert (out[0] == out[1]).all() and (out[1] == out[2]).all()
    with pytest.raises(ValueError, match="does not exist"):
        seg.predict(tmp_path / "missing.jpg")
