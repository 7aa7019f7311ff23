"""Face recognition: iResNet embeddings, margin losses with Partial FC, verification protocols.

Names are imported on first use, so that reading a config does not import torch."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PRESETS": "config",
    "FaceConfig": "config",
    "FaceDataConfig": "config",
    "FaceModelConfig": "config",
    "IJBConfig": "config",
    "MarginConfig": "config",
    "VerificationEvaluator": "evaluation",
    "evaluate_embeddings": "evaluation",
    "IJBResult": "ijb",
    "embed_aligned": "ijb",
    "evaluate_ijb": "ijb",
    "FaceTrainingModel": "model",
    "build_embedder": "model",
    "convert_face_state_dict": "model",
    "load_model": "model",
    "Embedder": "inference",
    "cluster": "inference",
    "search": "inference",
    "FaceTask": "task",
    "Gallery": "gallery",
    "EmbeddingSource": "gallery",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
