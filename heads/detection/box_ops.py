"""Box and target operations of Faster R-CNN on padded batches, without host synchronisation.

Each is the tensor-operation form of a torchvision component (its matcher, balanced sampler,
box coder, clipping and small-box filter), so a whole batch is handled at once on the device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import boxes as box_ops

from .config import BoxLossConfig


def nms_rows(
    boxes: Tensor, scores: Tensor, valid: Tensor, iou: float, idxs: Tensor | None = None
) -> Tensor:
    """torchvision's ``batched_nms`` in each row of ``(G, K)`` (``idxs``: categories per box).

    The reference path: exactly what torchvision computes, one row (image) at a time.
    """
    keep = torch.zeros_like(valid)
    for g in range(boxes.shape[0]):
        idx = valid[g].nonzero().squeeze(1)
        if idx.numel():
            cats = idxs[g, idx] if idxs is not None else torch.zeros_like(idx)
            kept = box_ops.batched_nms(boxes[g, idx].float(), scores[g, idx].float(), cats, iou)
            keep[g, idx[kept]] = True
    return keep


def clip_boxes(boxes: Tensor, sizes: Tensor) -> Tensor:
    """``boxes: (N, ..., 4)`` clipped to per-image ``sizes: (N, 2)`` (height, width)."""
    shape = (sizes.shape[0],) + (1,) * (boxes.dim() - 2)
    h = sizes[:, 0].to(boxes.dtype).view(shape)
    w = sizes[:, 1].to(boxes.dtype).view(shape)
    x1 = torch.minimum(boxes[..., 0].clamp(min=0), w)
    y1 = torch.minimum(boxes[..., 1].clamp(min=0), h)
    x2 = torch.minimum(boxes[..., 2].clamp(min=0), w)
    y2 = torch.minimum(boxes[..., 3].clamp(min=0), h)
    return torch.stack([x1, y1, x2, y2], dim=-1)


def not_small(boxes: Tensor, min_size: float) -> Tensor:
    return ((boxes[..., 2] - boxes[..., 0]) >= min_size) & (
        (boxes[..., 3] - boxes[..., 1]) >= min_size
    )


def match(
    gt_boxes: Tensor, candidates: Tensor, high: float, low: float, low_quality: bool
) -> tuple[Tensor, Tensor]:
    """torchvision's ``Matcher`` for one image as tensor operations (no host synchronisation):
    ``(M,)`` index of the best-overlapping gt box and ``(M,)`` labels: 1 foreground (IoU >=
    ``high``, or, with ``low_quality``, a candidate that is some gt box's best match, ties
    included), 0 background (IoU < ``low``), -1 in between (ignored)."""
    m = candidates.shape[0]
    if gt_boxes.shape[0] == 0:  # an image without boxes: everything is background
        zeros = torch.zeros(m, dtype=torch.int64, device=candidates.device)
        return zeros, zeros.clone()
    iou = box_ops.box_iou(gt_boxes, candidates)  # (G, M)
    best, idx = iou.max(dim=0)
    fg = best >= high
    if low_quality:
        fg |= (iou == iou.max(dim=1, keepdim=True).values).any(dim=0)
    labels = torch.where(fg, 1, torch.where(best < low, 0, -1))
    return idx, labels


def sample_balanced(fg: Tensor, bg: Tensor, batch: int, fraction: float) -> tuple[Tensor, Tensor]:
    """torchvision's ``BalancedPositiveNegativeSampler`` on ``(N, M)`` masks without host
    synchronisation: per row, a uniformly random subset of at most ``batch * fraction``
    foreground entries, filled up to ``batch`` with random background ones."""
    num_fg = fg.sum(1).clamp(max=int(batch * fraction))
    num_bg = torch.minimum(bg.sum(1), batch - num_fg)

    def pick(mask: Tensor, count: Tensor, k: int) -> Tensor:
        k = min(k, mask.shape[1])
        keys = torch.rand(mask.shape, device=mask.device).masked_fill(~mask, 2.0)
        idx = keys.topk(k, dim=1, largest=False).indices  # the mask's entries first, shuffled
        chosen = torch.arange(k, device=mask.device) < count[:, None]
        return torch.zeros_like(mask).scatter(1, idx, chosen)

    return pick(fg, num_fg, int(batch * fraction)), pick(bg, num_bg, batch)


def masked_box_loss(pred: Tensor, target: Tensor, positive: Tensor, cfg: BoxLossConfig) -> Tensor:
    """Smooth-L1 (``cfg.beta``) or L1 box loss summed over the ``positive`` rows only (no
    boolean indexing, so no host synchronisation)."""
    target = torch.where(positive[..., None], target, pred.detach())
    if cfg.kind == "l1" or cfg.beta == 0:
        loss = F.l1_loss(pred, target, reduction="none")
    else:
        loss = F.smooth_l1_loss(pred, target, beta=cfg.beta, reduction="none")
    return torch.where(positive[..., None], loss, 0.0).sum()


def sizes_tensor(sizes: list[tuple[int, int]], device: torch.device) -> Tensor:
    """``(N, 2)`` image sizes on ``device`` without a synchronous host-to-GPU copy."""
    t = torch.tensor(sizes, dtype=torch.int64)
    if device.type == "cuda" and not torch.jit.is_tracing():
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def encode_boxes(weights: tuple[float, ...], gt: Tensor, ref: Tensor) -> Tensor:
    """torchvision's ``BoxCoder.encode_single`` (same arithmetic) with the weights as Python
    numbers: torchvision copies them to the GPU on every call, a synchronous copy."""
    wx, wy, ww, wh = weights
    ex_w, ex_h = ref[:, 2] - ref[:, 0], ref[:, 3] - ref[:, 1]
    ex_x, ex_y = ref[:, 0] + 0.5 * ex_w, ref[:, 1] + 0.5 * ex_h
    gt_w, gt_h = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    gt_x, gt_y = gt[:, 0] + 0.5 * gt_w, gt[:, 1] + 0.5 * gt_h
    return torch.stack(
        [
            wx * (gt_x - ex_x) / ex_w,
            wy * (gt_y - ex_y) / ex_h,
            ww * torch.log(gt_w / ex_w),
            wh * torch.log(gt_h / ex_h),
        ],
        dim=1,
    )


def to_rois(boxes: Tensor) -> Tensor:
    """``(N, P, 4)`` -> ``(N * P, 5)`` with the image index first."""
    n, p = boxes.shape[:2]
    idx = torch.arange(n, device=boxes.device, dtype=boxes.dtype).view(n, 1, 1).expand(n, p, 1)
    return torch.cat([idx, boxes], dim=2).reshape(-1, 5)
