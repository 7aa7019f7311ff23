"""Faster R-CNN with an FPN neck on any backbone, from torchvision's detection components.

torchvision provides the anchor generator, RPN head and target assignment, RoI heads sampling,
box coder, TwoMLPHead / FastRCNNConvFCHead, FastRCNNPredictor and FeaturePyramidNetwork; they
are composed here behind the feature contract (sized from ``feature_specs``), with:

- a configurable box loss (smooth-L1 with beta, or L1) for the RPN and the box head;
- RoIAlign with ``aligned`` (half-pixel correction) and scales taken from the declared strides;
- inference as batched tensor operations: proposal filtering and detection post-processing run
  for all images at once (NMS over (image, level) / image groups, see ``heads.nms``), which also
  exports to ONNX with a dynamic batch dimension;
- head outputs decoded in fp32 under autocast (bf16 box coordinates would be 8 px coarse).

Module names match torchvision's ``FasterRCNN`` (``backbone.body``, ``backbone.fpn``, ``rpn``,
``roi_heads``), so its ``fasterrcnn_resnet50_fpn`` / ``_v2`` state_dicts load unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import (
    FastRCNNConvFCHead,
    FastRCNNPredictor,
    TwoMLPHead,
)
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import (
    RegionProposalNetwork,
    RPNHead,
    concat_box_prediction_layers,
)
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import boxes as box_ops
from torchvision.ops import roi_align

from resvision.backbones import Backbone

from .fpn import FPN
from .nms import group_nms


@dataclass
class DetectorHeadConfig:
    """FPN, RPN and box-head options of Faster R-CNN (torchvision's defaults)."""

    num_classes: int = 80  # object classes; the classifier has num_classes + 1 outputs
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)  # one per pyramid level P2..P6
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    fpn_channels: int = 256
    head_norm: bool = False  # BN in the FPN and a 4-conv + 1-fc box head (torchvision v2)
    rpn_conv_depth: int = 1  # 2 in torchvision v2
    rpn_pre_nms_top_n_train: int = 2000  # per level
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000  # per image (detectron2: 1000)
    rpn_post_nms_top_n_test: int = 1000
    rpn_nms_thresh: float = 0.7
    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    roi_output_size: int = 7
    roi_sampling_ratio: int = 2  # 0 = adaptive (detectron2's ROIAlignV2)
    roi_aligned: bool = False  # half-pixel correction (detectron2: true)
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    box_loss: Literal["smooth_l1", "l1"] = "smooth_l1"
    smooth_l1_beta: float = 1 / 9
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 100
    class_agnostic_nms: bool = False
    test_min_size: int = 800  # inference resize: shorter side, capped by test_max_size
    test_max_size: int = 1333
    nms_impl: Literal["auto", "torchvision", "batched"] = "auto"  # auto: batched on GPU
    batched_nms_candidates: int = 4096  # per image, before the final batched NMS


def _nms_rows(
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


def _clip(boxes: Tensor, sizes: Tensor) -> Tensor:
    """``boxes: (N, ..., 4)`` clipped to per-image ``sizes: (N, 2)`` (height, width)."""
    shape = (sizes.shape[0],) + (1,) * (boxes.dim() - 2)
    h = sizes[:, 0].to(boxes.dtype).view(shape)
    w = sizes[:, 1].to(boxes.dtype).view(shape)
    x1 = torch.minimum(boxes[..., 0].clamp(min=0), w)
    y1 = torch.minimum(boxes[..., 1].clamp(min=0), h)
    x2 = torch.minimum(boxes[..., 2].clamp(min=0), w)
    y2 = torch.minimum(boxes[..., 3].clamp(min=0), h)
    return torch.stack([x1, y1, x2, y2], dim=-1)


def _not_small(boxes: Tensor, min_size: float) -> Tensor:
    return ((boxes[..., 2] - boxes[..., 0]) >= min_size) & (
        (boxes[..., 3] - boxes[..., 1]) >= min_size
    )


def _match(
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


def _sample(fg: Tensor, bg: Tensor, batch: int, fraction: float) -> tuple[Tensor, Tensor]:
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


def _masked_box_loss(
    pred: Tensor, target: Tensor, positive: Tensor, kind: str, beta: float
) -> Tensor:
    """Smooth-L1 (``beta``) or L1 box loss summed over the ``positive`` rows only (no boolean
    indexing, so no host synchronisation)."""
    target = torch.where(positive[..., None], target, pred.detach())
    if kind == "l1" or beta == 0:
        loss = F.l1_loss(pred, target, reduction="none")
    else:
        loss = F.smooth_l1_loss(pred, target, beta=beta, reduction="none")
    return torch.where(positive[..., None], loss, 0.0).sum()


class MultiScaleRoIAlign(nn.Module):
    """RoIAlign over pyramid levels, each RoI on the level of the FPN paper's rule.

    Unlike torchvision's, scales come from the declared strides (not inferred from the first
    batch), ``aligned`` is available, and RoIs come as one ``(R, 5)`` tensor of
    ``(image index, x1, y1, x2, y2)``.
    """

    def __init__(
        self,
        featmap_names: list[str],
        strides: list[int],
        output_size: int = 7,
        sampling_ratio: int = 2,
        aligned: bool = False,
    ) -> None:
        super().__init__()
        self.featmap_names = list(featmap_names)
        self.strides = list(strides)
        self.output_size = (output_size, output_size)
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.k_min = int(math.log2(strides[0]))
        self.k_max = int(math.log2(strides[-1]))

    def levels(self, rois: Tensor) -> Tensor:
        size = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
        level = torch.floor(4 + torch.log2(size / 224) + torch.tensor(1e-6, dtype=size.dtype))
        return (level.clamp(self.k_min, self.k_max) - self.k_min).to(torch.int64)

    def forward(self, features: dict[str, Tensor], rois: Tensor) -> Tensor:
        feats = [features[n] for n in self.featmap_names]
        levels = self.levels(rois)
        if not torch.jit.is_tracing():
            return self._pool_by_level(feats, rois, levels)
        pooled = [
            roi_align(
                f,
                rois,
                self.output_size,
                1.0 / s,
                self.sampling_ratio,
                self.aligned,
            )
            for i, (f, s) in enumerate(zip(feats, self.strides))
        ]
        # export: every level pooled every RoI, picked per RoI
        out = pooled[0]
        for i in range(1, len(pooled)):
            out = torch.where((levels == i).view(-1, 1, 1, 1), pooled[i], out)
        return out

    def _pool_by_level(self, feats: list[Tensor], rois: Tensor, levels: Tensor) -> Tensor:
        pooled, order = self._pool_sorted(feats, rois, levels)
        return torch.empty_like(pooled).index_copy_(0, order, pooled)

    def _pool_sorted(
        self, feats: list[Tensor], rois: Tensor, levels: Tensor
    ) -> tuple[Tensor, Tensor]:
        """RoIs sorted by level and pooled level by level: one host sync (the level sizes)
        where masking each level costs two. Returns the pooled rows in that order and the
        order (row ``i`` is RoI ``order[i]``)."""
        order = levels.argsort(stable=True)
        counts = torch.bincount(levels, minlength=len(feats)).tolist()
        chunks = rois[order].split(counts)
        pooled = [
            roi_align(f, c, self.output_size, 1.0 / s, self.sampling_ratio, self.aligned)
            for f, s, c in zip(feats, self.strides, chunks)
        ]
        return torch.cat([p.to(feats[0].dtype) for p in pooled]), order

    def pool_sorted(self, features: dict[str, Tensor], rois: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`forward`'s rows, not yet put back in RoI order, and the order: a head that
        works row by row can run on them and reorder its (much smaller) outputs instead."""
        feats = [features[n] for n in self.featmap_names]
        return self._pool_sorted(feats, rois, self.levels(rois))


def _sizes_tensor(sizes: list[tuple[int, int]], device: torch.device) -> Tensor:
    """``(N, 2)`` image sizes on ``device`` without a synchronous host-to-GPU copy."""
    t = torch.tensor(sizes, dtype=torch.int64)
    if device.type == "cuda" and not torch.jit.is_tracing():
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _encode(weights: tuple[float, ...], gt: Tensor, ref: Tensor) -> Tensor:
    """torchvision's ``BoxCoder.encode_single`` (same arithmetic) with the weights as Python
    numbers: torchvision copies them to the GPU on every call, a synchronous copy."""
    wx, wy, ww, wh = weights
    ex_w, ex_h = ref[:, 2] - ref[:, 0], ref[:, 3] - ref[:, 1]
    ex_x, ex_y = ref[:, 0] + 0.5 * ex_w, ref[:, 1] + 0.5 * ex_h
    gt_w, gt_h = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    gt_x, gt_y = gt[:, 0] + 0.5 * gt_w, gt[:, 1] + 0.5 * gt_h
    return torch.stack(
        [wx * (gt_x - ex_x) / ex_w, wy * (gt_y - ex_y) / ex_h,
         ww * torch.log(gt_w / ex_w), wh * torch.log(gt_h / ex_h)], dim=1,
    )  # fmt: skip


def _rois(boxes: Tensor) -> Tensor:
    """``(N, P, 4)`` -> ``(N * P, 5)`` with the image index first."""
    n, p = boxes.shape[:2]
    idx = torch.arange(n, device=boxes.device, dtype=boxes.dtype).view(n, 1, 1).expand(n, p, 1)
    return torch.cat([idx, boxes], dim=2).reshape(-1, 5)


class RPN(RegionProposalNetwork):
    """torchvision's RPN with fp32 decoding, a configurable box loss and batched filtering."""

    def __init__(
        self, cfg: DetectorHeadConfig, anchor_generator: AnchorGenerator, head: RPNHead
    ) -> None:
        super().__init__(
            anchor_generator,
            head,
            cfg.rpn_fg_iou_thresh,
            cfg.rpn_bg_iou_thresh,
            cfg.rpn_batch_size_per_image,
            cfg.rpn_positive_fraction,
            {"training": cfg.rpn_pre_nms_top_n_train, "testing": cfg.rpn_pre_nms_top_n_test},
            {"training": cfg.rpn_post_nms_top_n_train, "testing": cfg.rpn_post_nms_top_n_test},
            cfg.rpn_nms_thresh,
        )
        self.cfg = cfg

    def anchors(self, padded_size: tuple[int, int], features: list[Tensor]) -> Tensor:
        """Anchors of one image (identical for every image of a batch), ``(A, 4)``."""
        grid_sizes = [f.shape[-2:] for f in features]
        device = features[0].device
        strides = [
            [
                torch.full((), padded_size[0] // g[0], dtype=torch.int64, device=device),
                torch.full((), padded_size[1] // g[1], dtype=torch.int64, device=device),
            ]
            for g in grid_sizes
        ]
        self.anchor_generator.set_cell_anchors(torch.float32, device)
        return torch.cat(self.anchor_generator.grid_anchors(grid_sizes, strides))

    def propose(
        self, features: list[Tensor], padded_size: tuple[int, int], image_sizes: Tensor, impl: str
    ):
        """Proposals for all images at once: ``(N, P, 4)`` boxes, scores, valid mask, plus the
        raw objectness/deltas/anchors the training loss needs."""
        objectness, deltas = self.head(features)
        num_per_level = [o.shape[1] * o.shape[2] * o.shape[3] for o in objectness]
        n = features[0].shape[0]
        anchors = self.anchors(padded_size, features)
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        objectness, deltas = objectness.float(), deltas.float()
        proposals = self.box_coder.decode_single(deltas.detach(), anchors.repeat(n, 1)).view(
            n, -1, 4
        )
        scores = objectness.detach().view(n, -1)
        top = self._get_top_n_idx(scores, num_per_level)  # (N, sum k_l), level-contiguous
        batch = torch.arange(n, device=scores.device)[:, None]
        scores, proposals = scores[batch, top], proposals[batch, top]
        k = [min(self.pre_nms_top_n(), m) for m in num_per_level]
        prob = torch.sigmoid(scores)
        boxes = _clip(proposals, image_sizes)
        valid = _not_small(boxes, self.min_size) & (prob >= self.score_thresh)
        if impl == "batched" or torch.jit.is_tracing():
            # one NMS row per (image, level), each level padded to the longest
            kmax, parts = max(k), ([], [], [])
            start = 0
            for kl in k:
                pad = kmax - kl
                parts[0].append(F.pad(boxes[:, start : start + kl], (0, 0, 0, pad)))
                parts[1].append(F.pad(prob[:, start : start + kl], (0, pad)))
                parts[2].append(F.pad(valid[:, start : start + kl], (0, pad)))
                start += kl
            boxes = torch.stack(parts[0], 1).view(n, -1, 4)
            prob = torch.stack(parts[1], 1).view(n, -1)
            valid = torch.stack(parts[2], 1).view(n, -1)
            keep = group_nms(
                boxes.view(-1, kmax, 4), prob.view(-1, kmax), valid.view(-1, kmax), self.nms_thresh
            ).view(n, -1)
        else:
            levels = torch.cat([torch.full((kl,), i, device=prob.device) for i, kl in enumerate(k)])
            keep = _nms_rows(boxes, prob, valid, self.nms_thresh, levels.expand(n, -1))
        masked = prob.masked_fill(~keep, float("-inf"))
        post = min(self.post_nms_top_n(), masked.shape[1])
        if not (torch.jit.is_tracing() or self.training):  # no padding beyond the longest row
            post = max(min(post, int(keep.sum(1).max())), 1)  # (one sync; training samples)
        top_scores, idx = masked.topk(post, dim=1)
        top_boxes = boxes.gather(1, idx[..., None].expand(-1, -1, 4))
        return (
            top_boxes,
            top_scores,
            torch.isfinite(top_scores),
            (objectness, deltas, anchors, num_per_level),
        )

    def losses(self, raw, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """torchvision's RPN losses (same matching, sampling and normalisation) computed for
        the whole batch as tensor operations, without host synchronisation."""
        objectness, deltas, anchors, _ = raw
        n = len(targets)
        matches = [
            _match(t["boxes"], anchors, self.proposal_matcher.high_threshold,
                   self.proposal_matcher.low_threshold, True)
            for t in targets
        ]  # fmt: skip
        labels = torch.stack([lab for _, lab in matches])  # (N, A)
        matched = torch.stack(
            [t["boxes"][idx] if t["boxes"].shape[0] else torch.zeros_like(anchors)
             for t, (idx, _) in zip(targets, matches)]
        )  # fmt: skip
        fg, bg = _sample(labels == 1, labels == 0, self.fg_bg_sampler.batch_size_per_image,
                         self.fg_bg_sampler.positive_fraction)  # fmt: skip
        sampled = fg | bg
        count = sampled.sum().clamp(min=1)
        targets_t = _encode(self.box_coder.weights, matched.view(-1, 4), anchors.repeat(n, 1))
        box = _masked_box_loss(deltas.view(n, -1, 4), targets_t.view(n, -1, 4), fg,
                               self.cfg.box_loss, self.cfg.smooth_l1_beta)  # fmt: skip
        obj = F.binary_cross_entropy_with_logits(
            objectness.view(n, -1), fg.to(objectness.dtype), reduction="none"
        )
        return {
            "loss_objectness": torch.where(sampled, obj, 0.0).sum() / count,
            "loss_rpn_box_reg": box / count,
        }


class BoxHeads(RoIHeads):
    """torchvision's RoIHeads (sampling, box coder) with our pooler, loss and batched output."""

    def __init__(
        self,
        cfg: DetectorHeadConfig,
        pooler: MultiScaleRoIAlign,
        box_head: nn.Module,
        predictor: nn.Module,
    ) -> None:
        super().__init__(
            pooler,
            box_head,
            predictor,
            cfg.box_fg_iou_thresh,
            cfg.box_bg_iou_thresh,
            cfg.box_batch_size_per_image,
            cfg.box_positive_fraction,
            None,
            cfg.score_thresh,
            cfg.nms_thresh,
            cfg.detections_per_img,
        )
        self.cfg = cfg

    def _predict(self, features: dict[str, Tensor], rois: Tensor) -> tuple[Tensor, Tensor]:
        if torch.jit.is_tracing():
            pooled, order = self.box_roi_pool(features, rois), None
        else:  # the head works row by row (BatchNorm's batch statistics ignore row order)
            pooled, order = self.box_roi_pool.pool_sorted(features, rois)
        class_logits, box_regression = self.box_predictor(self.box_head(pooled))
        class_logits, box_regression = class_logits.float(), box_regression.float()
        if order is not None:  # back in RoI order: 5 numbers a class per row, not 12,544
            class_logits = torch.empty_like(class_logits).index_copy_(0, order, class_logits)
            box_regression = torch.empty_like(box_regression).index_copy_(0, order, box_regression)
        return class_logits, box_regression

    def losses(
        self,
        features: dict[str, Tensor],
        proposals: Tensor,
        proposal_valid: Tensor,
        targets: list[dict[str, Tensor]],
    ) -> dict[str, Tensor]:
        """torchvision's box-head losses (gt boxes added to the proposals, same matching,
        sampling and normalisation) on padded ``(N, P, 4)`` proposals, without host
        synchronisation (one for heads with BatchNorm, which must not see padding)."""
        gmax = max(t["boxes"].shape[0] for t in targets)
        cands, valids, labels, matched = [], [], [], []
        for i, t in enumerate(targets):
            g = t["boxes"].shape[0]
            pad = gmax - g
            cand = torch.cat([proposals[i], t["boxes"].to(proposals.dtype)])  # (P + G, 4)
            idx, lab = _match(t["boxes"], cand, self.proposal_matcher.high_threshold,
                              self.proposal_matcher.low_threshold, False)  # fmt: skip
            gt_labels = t["labels"][idx] if g else torch.zeros_like(idx)
            cands.append(F.pad(cand, (0, 0, 0, pad)))
            valids.append(
                F.pad(torch.cat([proposal_valid[i], proposal_valid.new_ones(g)]), (0, pad))
            )
            labels.append(F.pad(torch.where(lab == 1, gt_labels, lab), (0, pad), value=-1))
            matched.append(F.pad(t["boxes"][idx] if g else torch.zeros_like(cand), (0, 0, 0, pad)))
        cand, valid = torch.stack(cands), torch.stack(valids)
        labels = torch.stack(labels).masked_fill(~valid, -1)
        fg, bg = _sample(labels > 0, labels == 0, self.fg_bg_sampler.batch_size_per_image,
                         self.fg_bg_sampler.positive_fraction)  # fmt: skip
        sampled = fg | bg
        k = min(self.fg_bg_sampler.batch_size_per_image, sampled.shape[1])
        slot = (~sampled).to(torch.uint8).argsort(dim=1, stable=True)[:, :k]  # sampled first
        used = sampled.gather(1, slot).reshape(-1)
        boxes = cand.gather(1, slot[..., None].expand(-1, -1, 4))
        gt = torch.stack(matched).gather(1, slot[..., None].expand(-1, -1, 4)).reshape(-1, 4)
        labels = labels.gather(1, slot).reshape(-1).masked_fill(~used, 0)
        rois = _rois(boxes)
        if self.cfg.head_norm:  # BatchNorm statistics over the sampled RoIs only
            rois, labels, gt, used = rois[used], labels[used], gt[used], used[used]
        class_logits, box_regression = self._predict(features, rois)
        count = used.sum().clamp(min=1)
        cls = F.cross_entropy(class_logits, labels, reduction="none")
        targets_t = _encode(self.box_coder.weights, gt, rois[:, 1:])
        box_regression = box_regression.reshape(box_regression.shape[0], -1, 4)
        pred = box_regression.gather(1, labels.view(-1, 1, 1).expand(-1, 1, 4)).squeeze(1)
        box = _masked_box_loss(pred, targets_t, used & (labels > 0), self.cfg.box_loss,
                               self.cfg.smooth_l1_beta)  # fmt: skip
        return {
            "loss_classifier": torch.where(used, cls, 0.0).sum() / count,
            "loss_box_reg": box / count,
        }

    def detect(
        self,
        features: dict[str, Tensor],
        proposals: Tensor,
        proposal_valid: Tensor,
        image_sizes: Tensor,
        impl: str,
    ):
        """``proposals: (N, P, 4)`` -> ``boxes (N, D, 4)``, ``scores (N, D)``, ``labels (N, D)``,
        ``valid (N, D)``, sorted by score, as torchvision's postprocess_detections computes them."""
        n, p = proposals.shape[:2]
        class_logits, box_regression = self._predict(features, _rois(proposals))
        num_classes = class_logits.shape[-1]
        boxes = self.box_coder.decode_single(box_regression, proposals.reshape(-1, 4)).view(
            n, p, num_classes, 4
        )
        scores = F.softmax(class_logits, -1).view(n, p, num_classes)
        boxes = _clip(boxes, image_sizes)[:, :, 1:].reshape(n, -1, 4)
        labels = (
            torch.arange(1, num_classes, device=scores.device)
            .view(1, 1, -1)
            .expand(n, p, -1)
            .reshape(n, -1)
        )
        scores = scores[:, :, 1:].reshape(n, -1)
        valid = proposal_valid[:, :, None].expand(-1, -1, num_classes - 1).reshape(n, -1)
        valid = valid & (scores > self.score_thresh) & _not_small(boxes, 1e-2)
        batched = impl == "batched" or torch.jit.is_tracing()
        cap = min(self.cfg.batched_nms_candidates, scores.shape[1]) if batched else scores.shape[1]
        if not torch.jit.is_tracing():  # no padding beyond the longest row (one sync)
            cap = max(min(cap, int(valid.sum(1).max())), 1)
        cand_scores, idx = scores.masked_fill(~valid, float("-inf")).topk(cap, dim=1)
        cand_boxes = boxes.gather(1, idx[..., None].expand(-1, -1, 4))
        cand_labels = labels.gather(1, idx)
        cand_valid = torch.isfinite(cand_scores)
        agnostic = self.cfg.class_agnostic_nms
        if batched:
            nms_boxes = cand_boxes
            if not agnostic:  # torchvision's coordinate trick: no overlap across classes
                nms_boxes = (
                    cand_boxes
                    + (cand_labels.to(cand_boxes.dtype) * (cand_boxes.max() + 1))[..., None]
                )
            keep = group_nms(nms_boxes, cand_scores, cand_valid, self.nms_thresh)
        else:
            keep = _nms_rows(
                cand_boxes,
                cand_scores,
                cand_valid,
                self.nms_thresh,
                None if agnostic else cand_labels,
            )
        final_scores, order = cand_scores.masked_fill(~keep, float("-inf")).topk(
            min(self.detections_per_img, cap), dim=1
        )
        out_valid = torch.isfinite(final_scores)
        out_boxes = cand_boxes.gather(1, order[..., None].expand(-1, -1, 4))
        out_labels = cand_labels.gather(1, order).masked_fill(~out_valid, 0)
        return out_boxes, final_scores.masked_fill(~out_valid, 0.0), out_labels, out_valid


class FasterRCNN(nn.Module):
    """Faster R-CNN + FPN on a registry backbone.

    ``forward(images, targets=None)``: ``images`` is a list of ``(3, H, W)`` tensors (uint8 or
    float in [0, 255]) or an ``(N, 3, H, W)`` tensor. In training mode (with targets: dicts with
    ``boxes`` (K, 4) xyxy in pixels and ``labels`` (K,) in 1..num_classes) it returns the four
    losses; images are used at their size (the data pipeline resizes). In eval mode images are
    resized to ``test_min_size``/``test_max_size`` as torchvision does and the result is a list
    of dicts with ``boxes`` (in the original image's coordinates), ``scores`` and ``labels``.
    """

    def __init__(self, backbone: Backbone, cfg: DetectorHeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        norm = backbone.normalization
        self.normalization = norm
        self.backbone = FPN(backbone, cfg.fpn_channels, nn.BatchNorm2d if cfg.head_norm else None)
        specs = self.backbone.out_specs
        if len(cfg.anchor_sizes) != len(specs):
            raise ValueError(
                f"anchor_sizes needs one size per pyramid level ({len(specs)}: {[s.name for s in specs]}), got {cfg.anchor_sizes}"
            )
        anchors = AnchorGenerator(
            tuple((s,) for s in cfg.anchor_sizes), (tuple(cfg.aspect_ratios),) * len(specs)
        )
        rpn_head = RPNHead(
            cfg.fpn_channels, anchors.num_anchors_per_location()[0], conv_depth=cfg.rpn_conv_depth
        )
        self.rpn = RPN(cfg, anchors, rpn_head)
        pooler = MultiScaleRoIAlign(
            [s.name for s in specs[:4]],
            [s.stride for s in specs[:4]],
            cfg.roi_output_size,
            cfg.roi_sampling_ratio,
            cfg.roi_aligned,
        )
        c, r = cfg.fpn_channels, cfg.roi_output_size
        if cfg.head_norm:
            box_head = FastRCNNConvFCHead(
                (c, r, r), [256, 256, 256, 256], [1024], norm_layer=nn.BatchNorm2d
            )
        else:
            box_head = TwoMLPHead(c * r * r, 1024)
        self.roi_heads = BoxHeads(
            cfg, pooler, box_head, FastRCNNPredictor(1024, cfg.num_classes + 1)
        )
        self.transform = GeneralizedRCNNTransform(
            cfg.test_min_size,
            cfg.test_max_size,
            list(norm.mean),
            list(norm.std),
            size_divisible=backbone.size_divisibility,
        )

    @property
    def nms_impl(self) -> str:
        if self.cfg.nms_impl != "auto":
            return self.cfg.nms_impl
        return "batched" if next(self.parameters()).is_cuda else "torchvision"

    def _to_unit(self, images) -> list[Tensor]:
        """Images as float in [0, 1] (what torchvision's transform expects)."""
        scale = self.normalization.max_pixel_value
        return [img.float() / scale for img in images]

    def _batch(self, images: list[Tensor], resize: bool) -> ImageList:
        out = []
        for img in images:
            # torchvision's transform.normalize, with the constants made once per device
            mean, std = self.normalization.constants(img)
            img = (img - mean) / std
            if resize:
                img, _ = self.transform.resize(img, None)
            out.append(img)
        sizes = [tuple(i.shape[-2:]) for i in out]
        return ImageList(
            self.transform.batch_images(out, size_divisible=self.transform.size_divisible), sizes
        )

    def forward(self, images, targets: list[dict[str, Tensor]] | None = None):
        if self.training:
            if targets is None:
                raise ValueError("training needs targets (boxes and labels per image)")
            batch = self._batch(self._to_unit(images), resize=False)
            features = self.backbone(batch.tensors)
            sizes = _sizes_tensor(batch.image_sizes, batch.tensors.device)
            proposals, _, valid, raw = self.rpn.propose(
                list(features.values()), tuple(batch.tensors.shape[-2:]), sizes, self.nms_impl
            )
            losses = self.rpn.losses(raw, targets)
            return losses | self.roi_heads.losses(features, proposals, valid, targets)
        originals = [tuple(img.shape[-2:]) for img in images]
        batch = self._batch(self._to_unit(images), resize=True)
        boxes, scores, labels, valid = self.detect(
            batch.tensors, _sizes_tensor(batch.image_sizes, batch.tensors.device)
        )
        results = []
        for i, (resized, original) in enumerate(zip(batch.image_sizes, originals)):
            keep = valid[i]
            results.append(
                {
                    "boxes": resize_boxes(boxes[i][keep], list(resized), list(original)),
                    "scores": scores[i][keep],
                    "labels": labels[i][keep],
                }
            )
        return results

    def detect(self, tensors: Tensor, image_sizes: Tensor):
        """Batched inference on normalized, padded ``tensors (N, 3, H, W)`` with per-image
        ``image_sizes (N, 2)``: padded ``boxes (N, D, 4)``, ``scores``, ``labels``, ``valid``."""
        features = self.backbone(tensors)
        proposals, _, pvalid, _ = self.rpn.propose(
            list(features.values()), tuple(tensors.shape[-2:]), image_sizes, self.nms_impl
        )
        return self.roi_heads.detect(features, proposals, pvalid, image_sizes, self.nms_impl)


__all__ = ["RPN", "BoxHeads", "DetectorHeadConfig", "FasterRCNN", "MultiScaleRoIAlign"]
