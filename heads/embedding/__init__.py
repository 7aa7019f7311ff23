"""Face-embedding heads and the embedding model (see :mod:`.model`); configs in :mod:`.config`
(no torch import)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # _EXPORTS' names, for editors, type checkers and grep
    from .config import EmbeddingHeadConfig as EmbeddingHeadConfig
    from .config import EmbeddingModelConfig as EmbeddingModelConfig
    from .model import EmbeddingModel as EmbeddingModel
    from .model import IResNetHead as IResNetHead
    from .model import PooledHead as PooledHead
    from .model import build_embedding_model as build_embedding_model

_EXPORTS = {
    "EmbeddingHeadConfig": "config",
    "EmbeddingModelConfig": "config",
    "EmbeddingModel": "model",
    "IResNetHead": "model",
    "PooledHead": "model",
    "build_embedding_model": "model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
