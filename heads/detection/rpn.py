"""The region proposal network: torchvision's RPN with fp32 decoding, a configurable box loss,
batched proposal filtering and training losses without host synchronisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.rpn import (
    RegionProposalNetwork,
    RPNHead,
    concat_box_prediction_layers,
)

from ..nms import group_nms
from .box_ops import (
    clip_boxes,
    encode_boxes,
    masked_box_loss,
    match,
    nms_rows,
    not_small,
    sample_balanced,
)
from .config import BoxLossConfig, RPNConfig


class RPN(RegionProposalNetwork):
    """torchvision's RPN with fp32 decoding, a configurable box loss and batched filtering."""

    def __init__(
        self,
        cfg: RPNConfig,
        box_loss: BoxLossConfig,
        anchor_generator: AnchorGenerator,
        head: RPNHead,
    ) -> None:
        super().__init__(
            anchor_generator,
            head,
            cfg.fg_iou_thresh,
            cfg.bg_iou_thresh,
            cfg.batch_size_per_image,
            cfg.positive_fraction,
            {"training": cfg.pre_nms_top_n_train, "testing": cfg.pre_nms_top_n_test},
            {"training": cfg.post_nms_top_n_train, "testing": cfg.post_nms_top_n_test},
            cfg.nms_thresh,
        )
        self.cfg = cfg
        self.box_loss = box_loss

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
        boxes = clip_boxes(proposals, image_sizes)
        valid = not_small(boxes, self.min_size) & (prob >= self.score_thresh)
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
            keep = nms_rows(boxes, prob, valid, self.nms_thresh, levels.expand(n, -1))
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
            match(
                t["boxes"],
                anchors,
                self.proposal_matcher.high_threshold,
                self.proposal_matcher.low_threshold,
                True,
            )
            for t in targets
        ]
        labels = torch.stack([lab for _, lab in matches])  # (N, A)
        matched = torch.stack(
            [
                t["boxes"][idx] if t["boxes"].shape[0] else torch.zeros_like(anchors)
                for t, (idx, _) in zip(targets, matches)
            ]
        )
        fg, bg = sample_balanced(
            labels == 1,
            labels == 0,
            self.fg_bg_sampler.batch_size_per_image,
            self.fg_bg_sampler.positive_fraction,
        )
        sampled = fg | bg
        count = sampled.sum().clamp(min=1)
        targets_t = encode_boxes(self.box_coder.weights, matched.view(-1, 4), anchors.repeat(n, 1))
        box = masked_box_loss(deltas.view(n, -1, 4), targets_t.view(n, -1, 4), fg, self.box_loss)
        obj = F.binary_cross_entropy_with_logits(
            objectness.view(n, -1), fg.to(objectness.dtype), reduction="none"
        )
        return {
            "loss_objectness": torch.where(sampled, obj, 0.0).sum() / count,
            "loss_rpn_box_reg": box / count,
        }
