"""Face-embedding model configs: the head options and the whole model's (no torch import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from resvision.backbones import BackboneConfig


@dataclass
class EmbeddingHeadConfig:
    head: Literal["auto", "iresnet", "pooled"] = "auto"  # auto: the backbone's embedding_head
    embedding_size: int = 512
    dropout: float = 0.0
    input_size: int = 112  # square input the iResNet head's FC is sized for


@dataclass
class EmbeddingModelConfig(BackboneConfig, EmbeddingHeadConfig):
    """Backbone options and embedding-head options."""
