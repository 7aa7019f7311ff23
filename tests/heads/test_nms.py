"""heads/nms.py: the batched, sync-free NMS and IoU equal torchvision's, decision for decision."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import nms

from resvision.heads.nms import group_nms


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
