"""torchvision's Faster R-CNN state_dicts load and give the same detections; batched NMS parity."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.ops import nms

from resvision.heads.nms import group_nms
from resvision.tasks.detection import DetectionTask
from resvision.tasks.detection.config import PRESETS
from resvision.tasks.engine.config import apply_overrides


def _randomized(v2: bool):
    """torchvision's model with seeded random weights that produce confident detections."""
    torch.manual_seed(0)
    build = (
        torchvision.models.detection.fasterrcnn_resnet50_fpn_v2
        if v2
        else torchvision.models.detection.fasterrcnn_resnet50_fpn
    )
    model = build(
        weights=None, weights_backbone=None, num_classes=91, min_size=256, max_size=384
    ).eval()
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torchvision.ops.FrozenBatchNorm2d | torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.mul_(
            0.3 if v2 else 2.5
        )  # no saturated (tied) scores
    # no cut at 100 detections: with random weights many scores are nearly tied at the cut
    model.roi_heads.detections_per_img = 1000
    return model


def assert_same_detections(
    expected: dict, got: dict, box_tol: float = 1e-3, score_tol: float = 1e-4
) -> None:
    """The same set of detections: each expected one has its own match with the same label,
    a score within ``score_tol`` and a box within ``box_tol`` px (equal scores may come in any
    order, so positions are not compared)."""
    assert len(expected["scores"]) == len(got["scores"])
    free = set(range(len(got["scores"])))
    for box, score, label in zip(expected["boxes"], expected["scores"], expected["labels"]):
        match = [
            j
            for j in free
            if got["labels"][j] == label
            and abs(got["scores"][j] - score) <= score_tol
            and (got["boxes"][j] - box).abs().max() <= box_tol
        ]
        assert match, f"no match for label {int(label)} score {float(score):.5f} box {box.tolist()}"
        free.remove(match[0])


@pytest.mark.parametrize(
    "v2", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["v1", "v2"]
)
def test_torchvision_fasterrcnn_state_dict_gives_the_same_detections(v2, tmp_path):
    ref = _randomized(v2)
    torch.save(ref.state_dict(), tmp_path / "tv.pth")
    preset = (
        "fasterrcnn_resnet50_fpn_v2_torchvision" if v2 else "fasterrcnn_resnet50_fpn_torchvision"
    )
    # torchvision builds an untrained model with plain BatchNorm2d (FrozenBatchNorm2d only with
    # pretrained weights): use the same op, so that the comparison is bit-for-bit
    overrides = [
        f"model.weights={tmp_path / 'tv.pth'}",
        "model.test_min_size=256",
        "model.test_max_size=384",
        "model.norm=bn",
        "model.detections_per_img=1000",
    ]
    cfg = apply_overrides(PRESETS[preset](), overrides)
    ours = DetectionTask().build_model(cfg).eval()
    g = torch.Generator().manual_seed(2)
    images = [
        (torch.rand(3, 240, 320, generator=g) * 255).round(),
        (torch.rand(3, 301, 257, generator=g) * 255).round(),
    ]
    # v2's conv box head sees RoI batches of another size when images are batched together,
    # and oneDNN's conv results then differ in the last bits: compare v2 image by image
    groups = [[img] for img in images] if v2 else [images]
    with torch.no_grad():
        expected = [r for group in groups for r in ref([img / 255 for img in group])]
        for impl in ("torchvision", "batched"):
            ours.cfg.nms_impl = impl
            got = [r for group in groups for r in ours(group)]
            for e, o in zip(expected, got):
                assert len(e["boxes"]) > 10  # the comparison is not vacuous
                assert_same_detections(e, o)


def test_batched_group_nms_equals_torchvision_nms():
    g = torch.Generator().manual_seed(0)
    groups, k = 12, 150
    xy = torch.rand(groups, k, 2, generator=g) * 100
    wh = torch.rand(groups, k, 2, generator=g) * 40 + 1
    boxes = torch.cat([xy, xy + wh], -1)
    scores = torch.rand(groups, k, generator=g)
    valid = torch.rand(groups, k, generator=g) > 0.2
    for threshold in (0.3, 0.5, 0.7):
        keep = group_nms(boxes, scores, valid, threshold)
        for row in range(groups):
            idx = valid[row].nonzero().squeeze(1)
            expected = set(idx[nms(boxes[row, idx], scores[row, idx], threshold)].tolist())
            assert set(keep[row].nonzero().squeeze(1).tolist()) == expected
