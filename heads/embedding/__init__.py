"""Face-embedding heads and the embedding model (see :mod:`.model`); configs in :mod:`.config`
(no torch import)."""

from __future__ import annotations

import importlib
from typing import Any

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
