"""Semantic-segmentation models on any backbone (see :mod:`.decoders`); configs in
:mod:`.config` (no torch import)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SegHeadConfig": "config",
    "SegModelConfig": "config",
    "ARCHITECTURES": "decoders",
    "DeepLabV3": "decoders",
    "DeepLabV3Plus": "decoders",
    "SegmentationModel": "decoders",
    "SemanticFPN": "decoders",
    "UNet": "decoders",
    "build_segmentation_model": "decoders",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
