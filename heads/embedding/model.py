"""Face-embedding heads on a backbone's last level, and the embedding model.

- :class:`IResNetHead` is InsightFace's "E" output: BN2d -> dropout -> flatten -> FC -> BN1d with
  its scale fixed at 1; module names ``bn2``, ``dropout``, ``fc``, ``features`` as in
  ``arcface_torch`` (so a ``backbone.pth`` loads). Its FC is sized from the input size
  (``512 * 7 * 7`` at 112x112).
- :class:`PooledHead`: global average pool -> FC -> BN1d (scale fixed at 1), for any backbone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from resvision.backbones import Backbone

from .config import EmbeddingHeadConfig, EmbeddingModelConfig


class IResNetHead(nn.Module):
    """``(N, C, h, w)`` -> ``(N, embedding_size)``: BN2d, dropout, flatten, FC, BN1d (scale 1)."""

    def __init__(
        self,
        channels: int,
        spatial: tuple[int, int],
        embedding_size: int = 512,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.bn2 = nn.BatchNorm2d(channels, eps=1e-5)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(channels * spatial[0] * spatial[1], embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        with torch.autocast(x.device.type, enabled=False):  # FC and BN1d in fp32, as arcface_torch
            return self.features(self.fc(x.float()))


class PooledHead(nn.Module):
    """``(N, C, h, w)`` -> ``(N, embedding_size)``: global average pool, FC, BN1d (scale 1)."""

    def __init__(self, channels: int, embedding_size: int = 512, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(channels, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.fc(self.dropout(x.mean((2, 3)))))


class EmbeddingModel(nn.Module):
    """``images (N, 3, H, W)`` in [0, 255] -> embeddings ``(N, D)`` (raw; :meth:`embed` normalizes).

    The backbone's normalization (``(x / 255 - 0.5) / 0.5`` for iResNets) is applied inside.
    """

    def __init__(self, backbone: Backbone, cfg: EmbeddingHeadConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.cfg = cfg
        spec = backbone.feature_specs[-1]
        kind = cfg.head
        if kind == "auto":
            kind = backbone.embedding_head
        if kind == "iresnet":
            side = -(-cfg.input_size // spec.stride)
            self.head = IResNetHead(spec.channels, (side, side), cfg.embedding_size, cfg.dropout)
        else:
            self.head = PooledHead(spec.channels, cfg.embedding_size, cfg.dropout)
        self.head_kind = kind

    @property
    def embedding_size(self) -> int:
        return self.cfg.embedding_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.backbone.normalization.normalize(images)
        return self.head(self.backbone(x)[self.backbone.feature_specs[-1].name])

    @torch.no_grad()
    def embed(
        self, images: torch.Tensor, flip: bool = False, normalize: bool = True
    ) -> torch.Tensor:
        """L2-normalized embeddings; ``flip`` adds the horizontally flipped image's embedding
        before normalizing (InsightFace's verification protocol); ``normalize=False`` keeps
        the sum's length (IJB templates weigh images by it)."""
        out = self(images).float()
        if flip:
            out = out + self(images.flip(-1)).float()
        return F.normalize(out, dim=1) if normalize else out


def build_embedding_model(cfg: EmbeddingModelConfig, *, backbone_weights=None) -> EmbeddingModel:
    """The backbone emitting only its last level, and the head."""
    with torch.device("meta"):
        last = cfg.create_backbone(None).family_specs[-1].name
    return EmbeddingModel(cfg.create_backbone((last,), weights=backbone_weights), cfg)
