"""Semantic-segmentation models on any backbone (see :mod:`.decoders`); configs in
:mod:`.config` (no torch import)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # _EXPORTS' names, for editors, type checkers and grep
    from .config import SegHeadConfig as SegHeadConfig
    from .config import SegModelConfig as SegModelConfig
    from .decoders import ARCHITECTURES as ARCHITECTURES
    from .decoders import DeepLabV3 as DeepLabV3
    from .decoders import DeepLabV3Plus as DeepLabV3Plus
    from .decoders import SegmentationModel as SegmentationModel
    from .decoders import SemanticFPN as SemanticFPN
    from .decoders import UNet as UNet
    from .decoders import build_segmentation_model as build_segmentation_model

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
