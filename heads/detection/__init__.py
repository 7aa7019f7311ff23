"""Faster R-CNN / Mask R-CNN + FPN on any backbone, in torchvision's parts: :mod:`.box_ops`,
:mod:`.poolers`, :mod:`.rpn`, :mod:`.roi_heads`, :mod:`.masks`, :mod:`.faster_rcnn`; configs in
:mod:`.config` (no torch)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AnchorConfig": "config",
    "BoxLossConfig": "config",
    "FasterRCNNConfig": "config",
    "MaskHeadConfig": "config",
    "RPNConfig": "config",
    "RoIHeadsConfig": "config",
    "TestSizeConfig": "config",
    "FasterRCNN": "faster_rcnn",
    "MultiScaleRoIAlign": "poolers",
    "BoxHeads": "roi_heads",
    "paste_masks": "masks",
    "RPN": "rpn",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
