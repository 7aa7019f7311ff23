"""RetinaFace's multibox loss for a whole batch at once, without host synchronisation.

The reference (the PyTorch port's ``MultiBoxLoss`` and ``match``) loops over images and copies
targets between host and device. Here every image's faces are padded into ``(N, G, ...)``
tensors and each step of the reference becomes a tensor operation over the batch:

1. IoU of every face with every prior; each face's best prior, each prior's best face.
2. Faces whose best prior overlaps at least ``min_best_prior_iou`` force that prior positive
   (overlap set to 2); every face claims its best prior, the later face winning a shared one
   (the reference's loop order). An image without such a face has no positives at all.
3. Priors whose (forced) overlap reaches ``iou_threshold`` are positives, labelled 1 (face
   with landmarks) or -1 (face without): both train score and box, only the former landmarks.
4. Hard-negative mining: per image, the ``negatives_per_positive`` x positives negatives with
   the highest classification loss (at most P - 1).
5. Smooth-L1 box and landmark terms and the cross-entropy, summed over the selected priors
   and divided by the number of positives (landmark positives for the landmark term).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .box_coder import encode_boxes, encode_landmarks, point_form
from .config import MultiboxLossConfig


def pad_targets(targets: Sequence[dict[str, Tensor]], device: torch.device) -> dict[str, Tensor]:
    """Per-image ``boxes (K, 4)``, ``landmarks (K, 5, 2)``, ``has_landmarks (K,)`` -> padded
    ``(N, G, ...)`` tensors with ``valid (N, G)`` and ``labels (N, G)`` (1 or -1)."""
    g = max((len(t["boxes"]) for t in targets), default=0) or 1  # one invalid row if none
    n = len(targets)
    boxes = torch.zeros(n, g, 4, device=device)
    points = torch.zeros(n, g, 5, 2, device=device)
    labels = torch.zeros(n, g, dtype=torch.int64, device=device)
    valid = torch.zeros(n, g, dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        k = len(t["boxes"])
        if k:
            boxes[i, :k] = t["boxes"].to(device, torch.float32)
            points[i, :k] = t["landmarks"].to(device, torch.float32).reshape(k, 5, 2)
            has = t["has_landmarks"].to(device)
            labels[i, :k] = torch.where(has, 1, -1)
            valid[i, :k] = True
    return {"boxes": boxes, "landmarks": points, "labels": labels, "valid": valid}


def box_iou_pairs(gt: Tensor, boxes: Tensor) -> Tensor:
    """``gt (N, G, 4)`` and ``boxes (P, 4)`` xyxy -> ``(N, G, P)`` IoU (the reference's
    ``jaccard``: no +1 on widths)."""
    lt = torch.maximum(gt[..., None, :2], boxes[:, :2])
    rb = torch.minimum(gt[..., None, 2:], boxes[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_g = ((gt[..., 2] - gt[..., 0]) * (gt[..., 3] - gt[..., 1]))[..., None]
    area_b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (area_g + area_b - inter)


def match(gt: dict[str, Tensor], priors: Tensor, cfg: MultiboxLossConfig) -> tuple[Tensor, Tensor]:
    """Steps 1-3: ``(N, P)`` index of each prior's face and ``(N, P)`` labels (0 background,
    1 face with landmarks, -1 face without)."""
    n, g = gt["valid"].shape
    p = priors.shape[0]
    overlaps = box_iou_pairs(gt["boxes"], point_form(priors))
    overlaps = torch.where(gt["valid"][..., None], overlaps, -1.0)
    best_prior_overlap, best_prior = overlaps.max(2)  # (N, G)
    strong = gt["valid"] & (best_prior_overlap >= cfg.min_best_prior_iou)
    has_strong = strong.any(1, keepdim=True)  # (N, 1)
    best_truth_overlap, best_truth = overlaps.max(1)  # (N, P)
    forced = torch.zeros(n, p, dtype=torch.int64, device=priors.device)
    forced = forced.scatter_reduce(1, best_prior, strong.long(), "amax") > 0
    best_truth_overlap = torch.where(forced, 2.0, best_truth_overlap)
    face = torch.arange(g, device=priors.device).expand(n, g)
    face = torch.where(gt["valid"], face, -1)
    claimed = torch.full((n, p), -1, dtype=torch.int64, device=priors.device)
    claimed = claimed.scatter_reduce(1, best_prior, face, "amax")
    best_truth = torch.where(claimed >= 0, claimed, best_truth)
    labels = gt["labels"].gather(1, best_truth)
    labels = torch.where((best_truth_overlap < cfg.iou_threshold) | ~has_strong, 0, labels)
    return best_truth, labels


def _smooth_l1_sum(pred: Tensor, target: Tensor, selected: Tensor, beta: float) -> Tensor:
    """Smooth-L1 summed over the ``selected`` rows only; unselected targets (possibly
    infinite: a prior matched to nothing) never enter the arithmetic."""
    target = torch.where(selected[..., None], target, pred.detach())
    loss = F.smooth_l1_loss(pred, target, beta=beta, reduction="none")
    return torch.where(selected[..., None], loss, 0.0).sum()


def multibox_loss(
    logits: Tensor,
    box_deltas: Tensor,
    landmark_deltas: Tensor,
    priors: Tensor,
    targets: Sequence[dict[str, Tensor]],
    cfg: MultiboxLossConfig,
    variances: Sequence[float],
) -> dict[str, Tensor]:
    """The three RetinaFace losses of a batch.

    Args:
        logits: ``(N, P, 2)``; box_deltas: ``(N, P, 4)``; landmark_deltas: ``(N, P, 10)``.
        priors: ``(P, 4)`` ``(cx, cy, w, h)`` in the input's pixels.
        targets: per image ``boxes (K, 4)`` xyxy and ``landmarks (K, 5, 2)`` in the input's
            pixels, ``has_landmarks (K,)`` bool.
    Returns:
        ``loss_box`` (times ``box_weight``), ``loss_cls``, ``loss_landmarks`` (times
        ``landmark_weight``).
    """
    logits, box_deltas, landmark_deltas = (
        logits.float(),
        box_deltas.float(),
        landmark_deltas.float(),
    )
    gt = pad_targets(targets, logits.device)
    face, labels = match(gt, priors, cfg)
    positive = labels != 0
    with_landmarks = labels > 0
    index = face[..., None]
    matched_boxes = gt["boxes"].gather(1, index.expand(-1, -1, 4))
    matched_points = gt["landmarks"].gather(1, index[..., None].expand(-1, -1, 5, 2))
    box_targets = encode_boxes(matched_boxes, priors, variances)
    point_targets = encode_landmarks(matched_points, priors, variances)
    beta = cfg.smooth_l1_beta
    loss_box = _smooth_l1_sum(box_deltas, box_targets, positive, beta)
    loss_landmarks = _smooth_l1_sum(landmark_deltas, point_targets, with_landmarks, beta)

    target = positive.long()
    ce = torch.logsumexp(logits, -1) - logits.gather(2, target[..., None]).squeeze(-1)
    mining = torch.where(positive, 0.0, ce.detach())
    num_positive = positive.sum(1)
    num_negative = (cfg.negatives_per_positive * num_positive).clamp(max=logits.shape[1] - 1)
    order = mining.argsort(1, descending=True)
    ranks = torch.arange(logits.shape[1], device=logits.device)
    negative = torch.zeros_like(positive).scatter(1, order, ranks < num_negative[:, None])
    loss_cls = torch.where(positive | negative, ce, 0.0).sum()

    n = num_positive.sum().clamp(min=1)
    n_landmarks = with_landmarks.sum().clamp(min=1)
    return {
        "loss_box": cfg.box_weight * loss_box / n,
        "loss_cls": loss_cls / n,
        "loss_landmarks": cfg.landmark_weight * loss_landmarks / n_landmarks,
    }
