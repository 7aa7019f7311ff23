"""Residual backbones behind one contract, and the one registry that names them.

>>> from resvision.backbones import create_backbone
>>> bb = create_backbone("resnet50", out_levels=("c3", "c4", "c5"), output_stride=16)
>>> [(s.name, s.channels, s.stride) for s in bb.feature_specs]
[('c3', 512, 8), ('c4', 1024, 16), ('c5', 2048, 16)]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import BackboneConfig as BackboneConfig

if TYPE_CHECKING:  # _EXPORTS' names, for editors, type checkers and grep
    from .base import ARCFACE as ARCFACE
    from .base import IMAGENET as IMAGENET
    from .base import NORM_POLICIES as NORM_POLICIES
    from .base import Backbone as Backbone
    from .base import FeatureSpec as FeatureSpec
    from .base import Normalization as Normalization
    from .factory import create_backbone as create_backbone
    from .factory import list_backbones as list_backbones
    from .registry import register_backbone as register_backbone
    from .weights import LoadReport as LoadReport
    from .weights import WeightsError as WeightsError
    from .weights import adapt_input_conv as adapt_input_conv
    from .weights import load_backbone_weights as load_backbone_weights

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
