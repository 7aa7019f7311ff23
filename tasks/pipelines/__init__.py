"""Pipelines that chain tasks (no task of their own, so they may import several task packages):
:mod:`.face` runs photos -> faces (face detection) -> aligned crops -> embeddings (face)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # _EXPORTS' names, for editors, type checkers and grep
    from .face import FaceGallery as FaceGallery
    from .face import FacePipeline as FacePipeline
    from .face import PhotoFaces as PhotoFaces

_EXPORTS = {
    "FaceGallery": "face",
    "FacePipeline": "face",
    "PhotoFaces": "face",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
