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
        "model.test.min_size=256",
        "model.test.max_size=384",
        "model.norm=bn",
        "model.roi_heads.detections_per_img=1000",
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


@pytest.mark.parametrize("edges_per_box", [64, 0], ids=["sparse", "dense"])
def test_batched_group_nms_equals_torchvision_nms(edges_per_box, monkeypatch):
    """Both fixed-point iterations (over the edge list of overlapping pairs, and over the dense
    overlap matrix where the list would be too long) give torchvision's greedy NMS."""
    monkeypatch.setattr("resvision.heads.nms._SPARSE_EDGES_PER_BOX", edges_per_box)
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


@pytest.mark.parametrize(
    "v2", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["v1", "v2"]
)
def test_training_losses_equal_torchvision_when_every_anchor_and_proposal_is_sampled(v2):
    """Same weights, same images and boxes: the four training losses are torchvision's. Sampling
    is random in both, so every anchor and proposal is sampled (batch sizes above their counts).
    v2's box head has BatchNorm: its batch statistics must come from the sampled RoIs alone."""
    torch.manual_seed(0)
    build = (
        torchvision.models.detection.fasterrcnn_resnet50_fpn_v2
        if v2
        else torchvision.models.detection.fasterrcnn_resnet50_fpn
    )
    tv = build(weights=None, weights_backbone=None, num_classes=91, min_size=256, max_size=320)
    everything = 10**7
    tv.rpn.fg_bg_sampler.batch_size_per_image = everything
    tv.roi_heads.fg_bg_sampler.batch_size_per_image = everything
    tv.rpn._pre_nms_top_n["training"], tv.rpn._post_nms_top_n["training"] = 600, 300
    cfg = apply_overrides(
        PRESETS[f"fasterrcnn_resnet50_fpn{'_v2' if v2 else ''}_torchvision"](),
        ["model.norm=bn", "model.weights=none", "model.frozen_stages=0", f"model.rpn.batch_size_per_image={everything}",
         f"model.roi_heads.batch_size_per_image={everything}", "model.rpn.pre_nms_top_n_train=600",
         "model.rpn.post_nms_top_n_train=300"],
    )  # fmt: skip
    ours = DetectionTask().build_model(cfg)
    ours.load_state_dict(tv.state_dict())
    g = torch.Generator().manual_seed(3)
    # both sizes are left unchanged by torchvision's training resize (scale factor 1)
    images = [(torch.rand(3, 256, 320, generator=g) * 255).round(),
              (torch.rand(3, 200, 320, generator=g) * 255).round()]  # fmt: skip
    targets = []
    for img, k in zip(images, (5, 3)):
        h, w = img.shape[-2:]
        xy = torch.rand(k, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        wh = torch.rand(k, 2, generator=g) * 80 + 16
        targets.append({"boxes": torch.cat([xy, xy + wh], 1),
                        "labels": torch.randint(1, 91, (k,), generator=g)})  # fmt: skip
    tv.train(), ours.train()
    expected = tv([img / 255 for img in images], [dict(t) for t in targets])
    for impl in ("torchvision", "batched"):
        ours.cfg.nms_impl = impl
        got = ours(images, [dict(t) for t in targets])
        assert set(got) == set(expected)
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=2e-4, atol=1e-6, msg=key)


def test_sync_free_sampler_follows_torchvision_counts():
    from resvision.heads.detection.box_ops import sample_balanced as _sample

    g = torch.Generator().manual_seed(0)
    fg = torch.rand(4, 1000, generator=g) < torch.tensor([[0.001], [0.05], [0.3], [0.0]])
    bg = ~fg & (torch.rand(4, 1000, generator=g) < torch.tensor([[0.9], [0.9], [0.1], [0.0]]))
    pos, neg = _sample(fg, bg, 256, 0.5)
    assert not (pos & ~fg).any() and not (neg & ~bg).any()
    assert torch.equal(pos.sum(1), fg.sum(1).clamp(max=128))
    assert torch.equal(neg.sum(1), torch.minimum(bg.sum(1), 256 - pos.sum(1)))
    again, _ = _sample(fg, bg, 256, 0.5)
    assert not torch.equal(pos, again)  # a random subset, not the first entries


def test_batched_iou_is_bitwise_torchvision_box_iou():
    from torchvision.ops import box_iou

    from resvision.heads.nms import box_iou_batched

    g = torch.Generator().manual_seed(0)
    xy = (torch.rand(3, 300, 2, generator=g) * 200).round()  # integer corners: touching boxes
    wh = (torch.rand(3, 300, 2, generator=g) * 60).round()  # and zero-area ones
    boxes = torch.cat([xy, xy + wh], -1)
    other = boxes.flip(1)[:, :200]
    got = box_iou_batched(boxes, other)
    assert torch.equal(
        got.nan_to_num(-1),
        torch.stack([box_iou(a, b) for a, b in zip(boxes, other)]).nan_to_num(-1),
    )
