"""Greedy non-maximum suppression batched over many groups at once.

torchvision's ``batched_nms`` runs image by image, and for large inputs class by class, with a
device synchronisation per call. Here every group (an image, or an (image, level) pair) is a row
of a padded ``(G, K)`` tensor and all groups are suppressed together: with boxes sorted by score,
greedy NMS keeps box ``i`` iff no *kept* higher-scored box overlaps it by more than the
threshold. That recursion has exactly one solution; iterating
``keep = valid & ~any(kept higher-scored box with IoU > t)`` from ``keep = valid`` reaches it in
at most ``K`` steps (in practice a handful), so the result is identical to greedy NMS. The
overlap matrix is built once; the iterations then run over its list of overlapping pairs (a few
small kernels each) rather than re-reading the whole ``(G, K, K)`` matrix, unless the list
would be larger than the matrix.

Exported to ONNX, the same operation becomes ONNX's own ``NonMaxSuppression`` with one batch row
per group, so the exported graph has a dynamic batch dimension.
"""

from __future__ import annotations

import torch
from torch import Tensor


def box_iou_batched(a: Tensor, b: Tensor) -> Tensor:
    """``a: (G, K, 4)``, ``b: (G, M, 4)`` xyxy -> ``(G, K, M)`` IoU, computed as torchvision's
    NMS kernels compute it (same operations in the same order, so ``> threshold`` agrees bit for
    bit), one coordinate at a time into reused ``(G, K, M)`` buffers: no ``(G, K, M, 2)``
    temporaries, about half the memory traffic."""
    ax1, ay1, ax2, ay2 = (a[..., i, None] for i in range(4))  # (G, K, 1)
    bx1, by1, bx2, by2 = (b[:, None, :, i] for i in range(4))  # (G, 1, M)
    area_a = (ax2 - ax1) * (ay2 - ay1)
    area_b = (bx2 - bx1) * (by2 - by1)
    inter = torch.minimum(ax2, bx2)
    tmp = torch.maximum(ax1, bx1)
    inter.sub_(tmp).clamp_(min=0)  # overlap width
    torch.minimum(ay2, by2, out=tmp)
    tmp.sub_(torch.maximum(ay1, by1)).clamp_(min=0)  # overlap height
    inter.mul_(tmp)
    torch.add(area_a, area_b, out=tmp)
    return inter.div_(tmp.sub_(inter))


def _group_nms_eager(
    boxes: Tensor, scores: Tensor, valid: Tensor, iou_threshold: float, chunk: int
) -> Tensor:
    g, k = scores.shape
    if k == 0:
        return valid.clone()
    order = scores.masked_fill(~valid, float("-inf")).argsort(dim=1, descending=True, stable=True)
    sorted_boxes = boxes.gather(1, order[..., None].expand(-1, -1, 4)).float()
    sorted_valid = valid.gather(1, order)
    higher = torch.ones(k, k, dtype=torch.bool, device=boxes.device).tril(-1)  # column j < row i
    suppress = torch.empty(g, k, k, dtype=torch.bool, device=boxes.device)
    for start in range(0, g, chunk):  # bound the float IoU memory to `chunk` groups
        b = sorted_boxes[start : start + chunk]
        suppress[start : start + chunk] = (box_iou_batched(b, b) > iou_threshold) & higher
    suppress &= sorted_valid[:, None, :]
    edges = suppress.nonzero()  # (E, 3): group, box, higher-scored box that may suppress it
    if edges.shape[0] <= _SPARSE_EDGES_PER_BOX * g * k:
        del suppress
        keep = _fixed_point_sparse(sorted_valid, edges)
    else:  # so many overlaps that the edge list would outgrow the dense matrix
        keep = _fixed_point(sorted_valid, lambda keep: (suppress & keep[:, None, :]).any(dim=2), k)
    out = torch.zeros_like(valid)
    return out.scatter(1, order, keep)


# Overlapping pairs are few in practice (a box overlaps its neighbours, not the image): iterating
# over an edge list costs a few small kernels where the dense ``(G, K, K)`` pass reads it all.
_SPARSE_EDGES_PER_BOX = 64


def _fixed_point(valid: Tensor, suppressed, max_steps: int) -> Tensor:
    """Iterate ``keep = valid & ~suppressed(keep)`` from ``keep = valid`` until it stops
    changing (that is greedy NMS's result, reached in at most ``max_steps``)."""
    keep = valid
    for step in range(max_steps):
        new = valid & ~suppressed(keep)
        # converged iff an iteration changes nothing, and iterating past that changes nothing:
        # comparing every 4th iteration only saves host synchronisations
        if (step % 4 == 3 or step == max_steps - 1) and torch.equal(new, keep):
            break
        keep = new
    return keep


def _fixed_point_sparse(valid: Tensor, edges: Tensor) -> Tensor:
    g, k = valid.shape
    box = edges[:, 0] * k + edges[:, 1]
    by = edges[:, 0] * k + edges[:, 2]

    def suppressed(keep: Tensor) -> Tensor:
        hits = torch.zeros(g * k, dtype=torch.int32, device=valid.device)
        hits.index_add_(0, box, keep.reshape(-1)[by].int())
        return hits.view(g, k) > 0

    return _fixed_point(valid, suppressed, k)


class _GroupNMS(torch.autograd.Function):
    """Eager: the fixed-point iteration. ONNX: NonMaxSuppression over (G, K) rows."""

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, valid: Tensor, iou_threshold: float) -> Tensor:
        return _group_nms_eager(boxes, scores, valid, iou_threshold, chunk=16)

    @staticmethod
    def symbolic(g, boxes, scores, valid, iou_threshold):
        # invalid entries get a score below the score threshold, so ONNX NMS skips them
        low = g.op("Constant", value_t=torch.tensor(-1e9, dtype=torch.float32))
        masked = g.op("Where", valid, g.op("Cast", scores, to_i=1), low)
        scores3 = g.op(
            "Unsqueeze", masked, g.op("Constant", value_t=torch.tensor([1], dtype=torch.int64))
        )
        shape = g.op("Shape", scores)
        k = g.op(
            "Gather",
            shape,
            g.op("Constant", value_t=torch.tensor([1], dtype=torch.int64)),
            axis_i=0,
        )
        selected = g.op(
            "NonMaxSuppression",
            g.op("Cast", boxes, to_i=1),
            scores3,
            k,
            g.op("Constant", value_t=torch.tensor([iou_threshold], dtype=torch.float32)),
            g.op("Constant", value_t=torch.tensor([-1e8], dtype=torch.float32)),
        )  # (S, 3): group, class (always 0), box index
        idx = g.op(
            "Gather",
            selected,
            g.op("Constant", value_t=torch.tensor([0, 2], dtype=torch.int64)),
            axis_i=1,
        )
        zeros = g.op("ConstantOfShape", shape, value_t=torch.tensor([0], dtype=torch.uint8))
        ones = g.op(
            "Expand",
            g.op("Constant", value_t=torch.tensor([1], dtype=torch.uint8)),
            g.op(
                "Gather",
                g.op("Shape", idx),
                g.op("Constant", value_t=torch.tensor([0], dtype=torch.int64)),
                axis_i=0,
            ),
        )
        marked = g.op("ScatterND", zeros, idx, ones)
        return g.op("Cast", marked, to_i=9)  # bool


def group_nms(boxes: Tensor, scores: Tensor, valid: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS in every row at once.

    Args:
        boxes: ``(G, K, 4)`` xyxy; scores: ``(G, K)``; valid: ``(G, K)`` bool (padding, filtered).
    Returns:
        ``(G, K)`` bool: the boxes greedy NMS keeps in each row (a subset of ``valid``).
    """
    return _GroupNMS.apply(boxes, scores, valid, float(iou_threshold))
