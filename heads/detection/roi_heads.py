"""The RoI heads: torchvision's RoIHeads (sampling, box coder) with the multi-scale pooler,
a configurable box loss, training targets for padded batches, batched detection output, and
optionally Mask R-CNN's mask branch (its loss on the box head's foreground samples)."""

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
from .masks import foreground_rows, project_masks, select_class_masks
from .poolers import MultiScaleRoIAlign


class BoxHeads(RoIHeads):
    """torchvision's RoIHeads (sampling, box coder) with our pooler, loss and batched output.

    With ``mask_pooler``, ``mask_head`` and ``mask_predictor`` (torchvision's ``MaskRCNNHeads``
    and ``MaskRCNNPredictor``, under torchvision's attribute names) it is Mask R-CNN's: the
    training losses add ``loss_mask`` and :meth:`predict_masks` gives each detection's mask.
    """

    def __init__(
        self,
        cfg: RoIHeadsConfig,
        box_loss: BoxLossConfig,
        pooler: MultiScaleRoIAlign,
        box_head: nn.Module,
        predictor: nn.Module,
        mask_pooler: MultiScaleRoIAlign | None = None,
        mask_head: nn.Module | None = None,
        mask_predictor: nn.Module | None = None,
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
            mask_roi_pool=mask_pooler,
            mask_head=mask_head,
            mask_predictor=mask_predictor,
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
        synchronisation (one for heads with BatchNorm, which must not see padding); with the
        mask branch also torchvision's ``loss_mask`` (targets need ``masks (G, H, W)``)."""
        gmax = max(t["boxes"].shape[0] for t in targets)
        cands, valids, labels, matched, gt_index = [], [], [], [], []
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
            gt_index.append(F.pad(idx, (0, pad)))
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
        gt_index = torch.stack(gt_index).gather(1, slot).reshape(-1)
        rois = to_rois(boxes)
        if self.head_has_batch_norm:  # BatchNorm statistics over the sampled RoIs only
            rois, labels, gt, gt_index = rois[used], labels[used], gt[used], gt_index[used]
            used = used[used]
        class_logits, box_regression = self._predict(features, rois)
        count = used.sum().clamp(min=1)
        cls = F.cross_entropy(class_logits, labels, reduction="none")
        targets_t = encode_boxes(self.box_coder.weights, gt, rois[:, 1:])
        box_regression = box_regression.reshape(box_regression.shape[0], -1, 4)
        pred = box_regression.gather(1, labels.view(-1, 1, 1).expand(-1, 1, 4)).squeeze(1)
        box = masked_box_loss(pred, targets_t, used & (labels > 0), self.box_loss)
        losses = {
            "loss_classifier": torch.where(used, cls, 0.0).sum() / count,
            "loss_box_reg": box / count,
        }
        if self.has_mask():
            losses["loss_mask"] = self.mask_loss(features, rois, labels, gt_index, used, targets)
        return losses

    def mask_loss(
        self,
        features: dict[str, Tensor],
        rois: Tensor,
        labels: Tensor,
        gt_index: Tensor,
        used: Tensor,
        targets: list[dict[str, Tensor]],
    ) -> Tensor:
        """torchvision's ``maskrcnn_loss`` on the sampled foreground RoIs of the whole batch:
        binary cross-entropy of each RoI's class map against its matched mask resampled on the
        RoI (:func:`project_masks`), averaged over every pixel. One host synchronisation for
        the batch (the foreground count of each image) plus the pooler's."""
        rows, counts = foreground_rows(rois, labels, used, len(targets))
        if not counts or sum(counts) == 0:  # no foreground: zero, every mask weight in the graph
            params = [*self.mask_head.parameters(), *self.mask_predictor.parameters()]
            return sum(p.sum() for p in params) * 0.0
        rois, labels, gt_index = rois[rows], labels[rows], gt_index[rows]
        pooled, order = self.mask_roi_pool.pool_sorted(features, rois)
        logits = self.mask_predictor(self.mask_head(pooled))  # rows in pooling order
        size = logits.shape[-1]
        mask_targets = torch.cat(
            [
                project_masks(t["masks"], boxes[:, 1:], index, size)
                for t, boxes, index in zip(targets, rois.split(counts), gt_index.split(counts))
                if len(boxes)
            ]
        )
        return F.binary_cross_entropy_with_logits(
            select_class_masks(logits, labels[order]).float(), mask_targets[order]
        )

    def predict_masks(self, features: dict[str, Tensor], boxes: Tensor, labels: Tensor) -> Tensor:
        """``boxes (N, D, 4)`` (in the network's input pixels) and ``labels (N, D)`` ->
        ``(N, D, M, M)`` mask probabilities of each box's class (torchvision's
        ``maskrcnn_inference``), in the RoI's frame (:func:`paste_masks` puts them in the
        image)."""
        n, d = boxes.shape[:2]
        rois = to_rois(boxes)
        if torch.jit.is_tracing():
            pooled, order = self.mask_roi_pool(features, rois), None
        else:  # the head works row by row: run it in pooling order, reorder the masks
            pooled, order = self.mask_roi_pool.pool_sorted(features, rois)
        logits = self.mask_predictor(self.mask_head(pooled))
        labels = labels.reshape(-1)
        probs = select_class_masks(logits, labels if order is None else labels[order])
        probs = probs.float().sigmoid()
        if order is not None:
            probs = torch.empty_like(probs).index_copy_(0, order, probs)
        return probs.view(n, d, *probs.shape[-2:])

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
