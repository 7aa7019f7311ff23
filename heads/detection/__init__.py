"""Faster R-CNN / Mask R-CNN + FPN on any backbone, in torchvision's parts: :mod:`.box_ops`,
:mod:`.poolers`, :mod:`.rpn`, :mod:`.roi_heads`, :mod:`.masks`, :mod:`.faster_rcnn`; configs in
:mod:`.config` (no torch)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # _EXPORTS' names, for editors, type checkers and grep
    from .config import AnchorConfig as AnchorConfig
    from .config import BoxLossConfig as BoxLossConfig
    from .config import FasterRCNNConfig as FasterRCNNConfig
    from .config import MaskHeadConfig as MaskHeadConfig
    from .config import RoIHeadsConfig as RoIHeadsConfig
    from .config import RPNConfig as RPNConfig
    from .config import TestSizeConfig as TestSizeConfig
    from .faster_rcnn import FasterRCNN as FasterRCNN
    from .masks import paste_masks as paste_masks
    from .poolers import MultiScaleRoIAlign as MultiScaleRoIAlign
    from .roi_heads import BoxHeads as BoxHeads
    from .rpn import RPN as RPN

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
