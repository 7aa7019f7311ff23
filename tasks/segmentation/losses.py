"""Segmentation losses: cross-entropy, Dice, Focal and Lovász (smp's), weighted and combined.

Every term honours ``ignore_index``: ignored pixels change neither the loss nor its gradient.
Terms are computed in fp32 whatever the autocast precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss, FocalLoss, LovaszLoss
from torch import nn

from .config import SegLossConfig


class SegmentationLoss(nn.Module):
    """``(logits (N, K, H, W), target (N, H, W) long) -> {"loss_ce": ..., "loss_dice": ...}``."""

    def __init__(self, cfg: SegLossConfig, num_classes: int, ignore_index: int = 255) -> None:
        super().__init__()
        if cfg.class_weights is not None and len(cfg.class_weights) != num_classes:
            raise ValueError(
                f"loss.class_weights has {len(cfg.class_weights)} values for {num_classes} classes"
            )
        self.cfg = cfg
        self.ignore_index = ignore_index
        weights = (
            torch.tensor(cfg.class_weights, dtype=torch.float32) if cfg.class_weights else None
        )
        self.register_buffer("class_weights", weights, persistent=False)
        self.dice = DiceLoss("multiclass", from_logits=True, ignore_index=ignore_index)
        self.focal = FocalLoss("multiclass", ignore_index=ignore_index)
        self.lovasz = LovaszLoss("multiclass", ignore_index=ignore_index)
        if not any((cfg.ce, cfg.dice, cfg.focal, cfg.lovasz)):
            raise ValueError(
                "every loss weight is 0: set loss.ce, loss.dice, loss.focal or loss.lovasz"
            )

    def cross_entropy(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean over non-ignored pixels (weighted by class weights); 0 when every pixel is
        ignored."""
        per_pixel = F.cross_entropy(
            logits,
            target,
            weight=self.class_weights,
            ignore_index=self.ignore_index,
            reduction="none",
        )
        valid = target != self.ignore_index
        if self.class_weights is None:
            denom = valid.sum()
        else:
            denom = self.class_weights[target.clamp(0, logits.shape[1] - 1)][valid].sum()
        return per_pixel.sum() / denom.clamp_min(1e-6)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = logits.float()
        out = {}
        if self.cfg.ce:
            out["loss_ce"] = self.cfg.ce * self.cross_entropy(logits, target)
        if self.cfg.dice:
            out["loss_dice"] = self.cfg.dice * self.dice(logits, target)
        if self.cfg.focal:
            out["loss_focal"] = self.cfg.focal * self.focal(logits, target)
        if self.cfg.lovasz:
            out["loss_lovasz"] = self.cfg.lovasz * self.lovasz(logits, target)
        return out
