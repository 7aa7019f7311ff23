"""torchvision's Mask R-CNN state_dicts load and give the same detections and masks, on real
photos of different sizes in one batch; the mask loss is torchvision's; pasting is
``paste_masks_in_image``'s."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models.detection.roi_heads import paste_masks_in_image

from resvision.heads.detection.masks import expand_boxes, paste_masks
from resvision.tasks.detection import DetectionTask
from resvision.tasks.detection.config import PRESETS
from resvision.tasks.engine.config import apply_overrides

from .test_compat import (
    _randomized,
    assert_same_as_torchvision,
    random_targets,
    sample_everything,
    torchvision_builder,
    training_losses,
)

# Mask probabilities are sigmoids of the mask head's logits on RoIAlign features of boxes that
# agree to about 1e-4 px: they differ by about 1e-6 (measured: 2e-6 at most); pasting adds 1e-6
# (PyTorch's bilinear resize against the same arithmetic as matrix products). A pasted mask
# whose expanded box lands on another integer pixel on one side (a coordinate within rounding
# of an integer: rare) is shifted by a pixel and not compared.
MASK_TOL = 1e-4


def _randomized_maskrcnn(v2: bool, detections: int):
    """torchvision's Mask R-CNN with test_compat's seeded random weights (small box deltas),
    class scores spread out on real photos (v2's batch norms make its logits larger there: at
    test_compat's 0.3 the top 40 all score 1.0 in float32) and ``detections`` an image."""
    return _randomized(
        v2, torchvision_builder("maskrcnn", v2), 224, 320, 0.03 if v2 else 0.75, detections
    )


def _ours(preset: str, overrides: list[str]):
    cfg = apply_overrides(PRESETS[preset](), overrides)
    return DetectionTask().build_model(cfg).eval()


def _compare_masks(stats: dict):
    def compare(expected: dict, got: dict, pairs: list[tuple[int, int]]) -> None:
        assert got["masks"].shape[1:] == expected["masks"].shape[2:]  # (K, H, W), no channel
        scale = (28 + 2) / 28
        ex = expand_boxes(expected["boxes"], scale).to(torch.int64)
        go = expand_boxes(got["boxes"], scale).to(torch.int64)
        for i, j in pairs:
            if not torch.equal(ex[i], go[j]):  # an integer pixel apart: see MASK_TOL
                stats["shifted"] += 1
                continue
            diff = (expected["masks"][i, 0] - got["masks"][j]).abs().max()
            stats["worst"] = max(stats["worst"], float(diff))
            stats["compared"] += 1
            stats["foreground"] += int((got["masks"][j] > 0.5).sum())

    return compare


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_torchvision_maskrcnn_state_dict_gives_the_same_detections_and_masks(
    v2, voc_sample, tmp_path
):
    """Same weights, two real photos of different sizes in one batch: torchvision's proposals,
    detections and masks (``(K, H, W)`` probabilities at each photo's size) up to float32
    rounding. Fails (each run once, v1) when the mask pooler samples 2 -> 0 points a bin, the
    paste pads the mask by 0 instead of 1 pixel, or masks are taken from class 0."""
    ref = _randomized_maskrcnn(v2, detections=15)
    torch.save(ref.state_dict(), tmp_path / "tv.pth")
    preset = "maskrcnn_resnet50_fpn_v2_torchvision" if v2 else "maskrcnn_resnet50_fpn_torchvision"
    ours = _ours(
        preset,
        [
            f"model.weights={tmp_path / 'tv.pth'}",
            "model.test.min_size=224",
            "model.test.max_size=320",
            "model.norm=bn",
            "model.roi_heads.detections_per_img=15",
        ],
    )
    photos = [
        torch.from_numpy(np.asarray(Image.open(voc_sample / "JPEGImages" / name))).permute(2, 0, 1)
        for name in ("2011_000003.jpg", "2011_000025.jpg")
    ]
    assert photos[0].shape != photos[1].shape
    images = [p.float() for p in photos]
    stats = {"worst": 0.0, "compared": 0, "shifted": 0, "foreground": 0}
    assert_same_as_torchvision(
        ref, ours, images, impls=("torchvision",), compare=_compare_masks(stats)
    )
    assert stats["compared"] >= 25 and stats["foreground"] > 1000, stats  # not vacuous
    assert stats["shifted"] <= max(2, stats["compared"] // 50), stats
    assert stats["worst"] <= MASK_TOL, stats


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_mask_loss_equals_torchvision_when_every_proposal_is_sampled(v2):
    """The five training losses are torchvision's (every anchor and proposal sampled, as in
    test_compat; our proposals given to both). v2's mask head has BatchNorm: its statistics
    come from the foreground RoIs alone. Fails when the mask targets' RoIAlign is aligned, or
    the loss reads the mask of class 0."""
    torch.manual_seed(0)
    tv = torchvision_builder("maskrcnn", v2)(
        weights=None, weights_backbone=None, num_classes=91, min_size=192, max_size=256
    )
    overrides = sample_everything(tv, 200, 60)
    ours = _ours(f"maskrcnn_resnet50_fpn{'_v2' if v2 else ''}_torchvision", overrides)
    ours.load_state_dict(tv.state_dict())
    g = torch.Generator().manual_seed(3)
    # both sizes are left unchanged by torchvision's training resize (scale factor 1)
    images = [
        (torch.rand(3, 192, 256, generator=g) * 255).round(),
        (torch.rand(3, 160, 256, generator=g) * 255).round(),
    ]
    targets = random_targets(images, (4, 3), g, max_wh=60)
    for img, t in zip(images, targets):  # each box 70% filled with its mask
        masks = torch.zeros(len(t["boxes"]), *img.shape[-2:], dtype=torch.uint8)
        for m, (x1, y1, x2, y2) in zip(masks, t["boxes"].round().int().tolist()):
            m[y1:y2, x1:x2] = (torch.rand(y2 - y1, x2 - x1, generator=g) < 0.7).to(torch.uint8)
        t["masks"] = masks
    got, expected = training_losses(tv, ours, images, targets, "torchvision")
    assert set(got) == set(expected) and "loss_mask" in got
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=2e-4, atol=1e-6, msg=key)


def test_paste_masks_is_torchvision_paste_masks_in_image():
    """Boxes (clipped to the image, as detections are) of every size, many at the edges (their
    expanded boxes cross them): the pasted masks are ``paste_masks_in_image``'s to 2e-6 (float
    rounding: PyTorch's bilinear kernel against the same weights as matrix products). Fails if
    the box is not expanded (padding 0) or the resize drops the half-pixel offset."""
    g = torch.Generator().manual_seed(0)
    k, h, w = 60, 97, 131
    masks = torch.rand(k, 28, 28, generator=g)
    xy = torch.rand(k, 2, generator=g) * torch.tensor([w, h]) - 10
    boxes = torch.cat([xy, xy + torch.rand(k, 2, generator=g) * 80 + 10.3], 1)
    boxes[:3] = torch.tensor([[0.0, 0.0, w, h], [0.0, 0.0, 2.0, 2.0], [w - 1, h - 1, w, h]])
    size = torch.tensor([w, h, w, h], dtype=torch.float32)
    boxes = torch.minimum(boxes.clamp(min=0), size)
    expected = paste_masks_in_image(masks[:, None], boxes, (h, w))[:, 0]
    got = paste_masks(masks, boxes, h, w)
    assert got.shape == (k, h, w)
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-6)
    assert paste_masks(masks[:0], boxes[:0], h, w).shape == (0, h, w)
