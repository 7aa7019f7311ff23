"""Face recognition: iResNet embeddings, margin losses with Partial FC, verification protocols.

Names are imported on first use, so that reading a config does not import torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # _EXPORTS' names, for editors, type checkers and grep
    from .config import PRESETS as PRESETS
    from .config import FaceConfig as FaceConfig
    from .config import FaceDataConfig as FaceDataConfig
    from .config import FaceModelConfig as FaceModelConfig
    from .config import IJBConfig as IJBConfig
    from .config import MarginConfig as MarginConfig
    from .evaluation import VerificationEvaluator as VerificationEvaluator
    from .evaluation import evaluate_embeddings as evaluate_embeddings
    from .gallery import EmbeddingSource as EmbeddingSource
    from .gallery import Gallery as Gallery
    from .ijb import IJBResult as IJBResult
    from .ijb import embed_aligned as embed_aligned
    from .ijb import evaluate_ijb as evaluate_ijb
    from .inference import Embedder as Embedder
    from .inference import cluster as cluster
    from .inference import search as search
    from .model import FaceTrainingModel as FaceTrainingModel
    from .model import build_embedder as build_embedder
    from .model import convert_face_state_dict as convert_face_state_dict
    from .model import load_model as load_model
    from .task import FaceTask as FaceTask

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
