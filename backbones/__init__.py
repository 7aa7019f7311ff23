"""Residual backbones behind one contract, and the one registry that names them.

>>> from resvision.backbones import create_backbone
>>> bb = create_backbone("resnet50", out_levels=("c3", "c4", "c5"), output_stride=16)
>>> [(s.name, s.channels, s.stride) for s in bb.feature_specs]
[('c3', 512, 8), ('c4', 1024, 16), ('c5', 2048, 16)]
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import BackboneConfig as BackboneConfig

# Names are imported on first use: reading a config (BackboneConfig) imports no torch.
_EXPORTS = {
    "ARCFACE": "base",
    "IMAGENET": "base",
    "NORM_POLICIES": "base",
    "Backbone": "base",
    "FeatureSpec": "base",
    "Normalization": "base",
    "create_backbone": "factory",
    "list_backbones": "factory",
    "register_backbone": "registry",
    "LoadReport": "weights",
    "WeightsError": "weights",
    "adapt_input_conv": "weights",
    "load_backbone_weights": "weights",
}

__all__ = sorted([*_EXPORTS, "BackboneConfig"])


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
