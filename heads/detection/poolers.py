"""Multi-scale RoIAlign over FPN levels, with the scales taken from the declared strides."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align


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
