"""Margin-based softmax losses for face embeddings, and Partial FC.

:class:`CombinedMarginLoss` turns cosine logits into ``s * cos(m1 * theta + m2) - s * m3`` at the
target class (ArcFace: ``m2=0.5``; CosFace: ``m3=0.4``; SphereFace-style: ``m1 > 1``), always in
fp32 whatever the autocast precision. Where ``m1 * theta + m2`` would pass pi (where the cosine
turns back up and the margin would *reward* a worse angle), the target logit continues as
``cos(theta) - (1 + cos(theta_0)) - m3`` beyond ``theta_0 = (pi - m2) / m1``: continuous and
decreasing in theta, so the loss keeps pushing the angle down.

:class:`PartialFC` keeps the class centres sharded across DDP ranks (each rank holds about
``num_classes / world_size`` of them) and optionally samples a fraction of the negative centres,
so that millions of identities fit; the softmax is computed across ranks. It runs in a single
process without any process group, and with gloo or NCCL.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

COS_EPS = 1e-6  # keeps sin(theta) >= ~1.4e-3, so d(theta)/d(cos) stays finite at 0 and pi


class CombinedMarginLoss(nn.Module):
    """``logits (N, C)`` cosine similarities, ``labels (N,)`` (-1: no target among these
    columns) -> margin-adjusted, scaled logits (fp32)."""

    def __init__(
        self,
        s: float = 64.0,
        m1: float = 1.0,
        m2: float = 0.5,
        m3: float = 0.0,
        interclass_filtering_threshold: float = 0.0,
    ) -> None:
        super().__init__()
        if m1 < 1 or m2 < 0 or m3 < 0:
            raise ValueError(f"margins need m1 >= 1, m2 >= 0, m3 >= 0; got ({m1}, {m2}, {m3})")
        self.s, self.m1, self.m2, self.m3 = s, m1, m2, m3
        self.threshold = interclass_filtering_threshold
        self.theta0 = (math.pi - m2) / m1

    def target_logit(self, cos: torch.Tensor) -> torch.Tensor:
        """``cos(m1 theta + m2) - m3``, continued past ``theta_0`` as described above."""
        if self.m1 == 1.0 and self.m2 == 0.0:
            return cos - self.m3
        cos = cos.clamp(-1 + COS_EPS, 1 - COS_EPS)
        theta = torch.acos(cos)
        inside = torch.cos(self.m1 * theta + self.m2)
        outside = cos - (1 + math.cos(self.theta0))
        return torch.where(theta <= self.theta0, inside, outside) - self.m3

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(logits.device.type, enabled=False):
            logits = logits.float()
            positive = labels >= 0
            if self.threshold > 0:  # zero negative logits above the threshold (label noise)
                with torch.no_grad():
                    dirty = logits > self.threshold
                    rows = positive.nonzero().squeeze(1)
                    dirty[rows, labels[rows]] = False
                logits = logits.masked_fill(dirty, 0.0)
            rows = positive.nonzero().squeeze(1)
            cols = labels[rows]
            target = self.target_logit(logits[rows, cols])
            logits = logits.index_put((rows, cols), target)
            return logits * self.s


ARCFACE = {"m1": 1.0, "m2": 0.5, "m3": 0.0}
COSFACE = {"m1": 1.0, "m2": 0.0, "m3": 0.4}
SPHEREFACE = {"m1": 1.35, "m2": 0.0, "m3": 0.0}


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class PartialFC(nn.Module):
    """Class centres sharded over ranks, sampled negatives, softmax across ranks.

    ``forward(embeddings (B, D), labels (B,))`` takes this rank's batch; embeddings and labels
    of every rank are gathered (with gradients), scored against this rank's centres, and the
    cross-entropy is computed with a distributed softmax. With one process and
    ``sample_rate=1`` it is exactly the full margin softmax.
    """

    def __init__(
        self,
        margin: CombinedMarginLoss,
        embedding_size: int,
        num_classes: int,
        sample_rate: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate={sample_rate} must be in (0, 1]")
        rank, world = _world()
        self.num_classes = num_classes
        self.num_local = num_classes // world + int(rank < num_classes % world)
        self.class_start = num_classes // world * rank + min(rank, num_classes % world)
        self.sample_rate = sample_rate
        self.margin = margin
        self.weight = nn.Parameter(torch.normal(0, 0.01, (self.num_local, embedding_size)))

    def _gather(
        self, embeddings: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _, world = _world()
        if world == 1:
            return embeddings, labels
        from torch.distributed.nn.functional import all_gather

        all_labels = [torch.empty_like(labels) for _ in range(world)]
        dist.all_gather(all_labels, labels)
        return torch.cat(all_gather(embeddings)), torch.cat(all_labels)

    def _sample(self, local_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Centres to score: every positive class of the batch plus random negatives."""
        num_sample = int(self.sample_rate * self.num_local)
        if num_sample >= self.num_local:
            return self.weight, local_labels
        with torch.no_grad():
            positive = torch.unique(local_labels[local_labels >= 0], sorted=True)
            score = torch.rand(self.num_local, device=self.weight.device)
            score[positive] = 2.0
            index = torch.topk(score, max(num_sample, len(positive)), sorted=True)[1].sort()[0]
            remap = torch.full((self.num_local,), -1, dtype=torch.long, device=self.weight.device)
            remap[index] = torch.arange(len(index), device=self.weight.device)
            local_labels = torch.where(
                local_labels >= 0, remap[local_labels.clamp(min=0)], local_labels
            )
        return self.weight[index], local_labels

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(embeddings.device.type, enabled=False):
            embeddings, labels = self._gather(embeddings.float(), labels.long())
            local = labels - self.class_start
            local = torch.where(
                (local >= 0) & (local < self.num_local), local, torch.full_like(local, -1)
            )
            weight, local = self._sample(local)
            cos = F.linear(F.normalize(embeddings), F.normalize(weight.float()))
            logits = self.margin(cos, local)
            return distributed_cross_entropy(logits, local)


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad


def distributed_cross_entropy(logits: torch.Tensor, local_labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over classes split across ranks: ``logits (B, C_local)``, ``local_labels``
    the target column on this rank or -1 (the target lives on another rank)."""
    _, world = _world()
    if world == 1:
        return F.cross_entropy(logits, local_labels.clamp(min=0))
    with torch.no_grad():
        max_logit = logits.max(dim=1, keepdim=True)[0]
        dist.all_reduce(max_logit, dist.ReduceOp.MAX)
    shifted = logits - max_logit
    sum_exp = _AllReduceSum.apply(shifted.exp().sum(dim=1))
    rows = (local_labels >= 0).nonzero().squeeze(1)
    target = torch.zeros(logits.shape[0], device=logits.device, dtype=logits.dtype)
    target = target.index_put((rows,), shifted[rows, local_labels[rows]])
    target = _AllReduceSum.apply(target)  # each sample's target column lives on one rank
    return (sum_exp.log() - target).mean()
