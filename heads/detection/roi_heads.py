"""The box head: torchvision's RoIHeads (sampling, box coder) with the multi-scale pooler,
a configurable box loss, training targets for padded batches, and batched detection output."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import RoIHeads

from ..nms import group_nms
from .box_ops import (
    clip_boxes,
    encode_boxes,
    masked_box_loss,
    match,
    nms_rows,
    not_small,
    sample_balanced,
    to_rois,
)
from .config import BoxLossConfig, RoIHeadsConfig
from .poolers import MultiScaleRoIAlign


class BoxHeads(RoIHeads):
    """torchvision's RoIHeads (sampling, box coder) with our pooler, loss and batched output."""

    def __init__(
        self,
        cfg: RoIHeadsConfig,
        box_loss: BoxLossConfig,
        pooler: MultiScaleRoIAlign,
        box_head: nn.Module,
        predictor: nn.Module,
    ) -> None:
        super().__init__(
            pooler,
            box_head,
            predictor,
            cfg.fg_iou_thresh,
            cfg.bg_iou_thresh,
            cfg.batch_size_per_image,
            cfg.positive_fraction,
            None,
            cfg.score_thresh,
            cfg.nms_thresh,
            cfg.detections_per_img,
        )
        self.cfg = cfg
        self.box_loss = box_loss
        # a head with BatchNorm must not see the padding rows of a batch (their statistics)
        self.head_has_batch_norm = any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in box_head.modules()
        )

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
            idx, lab = match(
                t["boxes"],
                cand,
                self.proposal_matcher.high_threshold,
                self.proposal_matcher.low_threshold,
                False,
            )
            gt_labels = t["labels"][idx] if g else torch.zeros_like(idx)
            cands.append(F.pad(cand, (0, 0, 0, pad)))
            valids.append(
                F.pad(torch.cat([proposal_valid[i], proposal_valid.new_ones(g)]), (0, pad))
            )
            labels.append(F.pad(torch.where(lab == 1, gt_labels, lab), (0, pad), value=-1))
            matched.append(F.pad(t["boxes"][idx] if g else torch.zeros_like(cand), (0, 0, 0, pad)))
        cand, valid = torch.stack(cands), torch.stack(valids)
        labels = torch.stack(labels).masked_fill(~valid, -1)
        fg, bg = sample_balanced(
            labels > 0,
            labels == 0,
            self.fg_bg_sampler.batch_size_per_image,
            self.fg_bg_sampler.positive_fraction,
        )
        sampled = fg | bg
        k = min(self.fg_bg_sampler.batch_size_per_image, sampled.shape[1])
        slot = (~sampled).to(torch.uint8).argsort(dim=1, stable=True)[:, :k]  # sampled first
        used = sampled.gather(1, slot).reshape(-1)
        boxes = cand.gather(1, slot[..., None].expand(-1, -1, 4))
        gt = torch.stack(matched).gather(1, slot[..., None].expand(-1, -1, 4)).reshape(-1, 4)
        labels = labels.gather(1, slot).reshape(-1).masked_fill(~used, 0)
        rois = to_rois(boxes)
        if self.head_has_batch_norm:  # BatchNorm statistics over the sampled RoIs only
            rois, labels, gt, used = rois[used], labels[used], gt[used], used[used]
        class_logits, box_regression = self._predict(features, rois)
        count = used.sum().clamp(min=1)
        cls = F.cross_entropy(class_logits, labels, reduction="none")
        targets_t = encode_boxes(self.box_coder.weights, gt, rois[:, 1:])
        box_regression = box_regression.reshape(box_regression.shape[0], -1, 4)
        pred = box_regression.gather(1, labels.view(-1, 1, 1).expand(-1, 1, 4)).squeeze(1)
        box = masked_box_loss(pred, targets_t, used & (labels > 0), self.box_loss)
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
        class_logits, box_regression = self._predict(features, to_rois(proposals))
        num_classes = class_logits.shape[-1]
        boxes = self.box_coder.decode_single(box_regression, proposals.reshape(-1, 4)).view(
            n, p, num_classes, 4
        )
        scores = F.softmax(class_logits, -1).view(n, p, num_classes)
        boxes = clip_boxes(boxes, image_sizes)[:, :, 1:].reshape(n, -1, 4)
        labels = (
            torch.arange(1, num_classes, device=scores.device)
            .view(1, 1, -1)
            .expand(n, p, -1)
            .reshape(n, -1)
        )
        scores = scores[:, :, 1:].reshape(n, -1)
        valid = proposal_valid[:, :, None].expand(-1, -1, num_classes - 1).reshape(n, -1)
        valid = valid & (scores > self.score_thresh) & not_small(boxes, 1e-2)
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
            keep = nms_rows(
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
