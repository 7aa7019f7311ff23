"""Object detection: Faster R-CNN + FPN on any registry backbone, COCO-ready.

Names are imported on first use, so that reading a config does not import torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # _EXPORTS' names, for editors, type checkers and grep
    from .config import PRESETS as PRESETS
    from .config import DetConfig as DetConfig
    from .config import DetDataConfig as DetDataConfig
    from .config import DetEvalConfig as DetEvalConfig
    from .config import DetModelConfig as DetModelConfig
    from .evaluation import COCOEvaluator as COCOEvaluator
    from .evaluation import DetectionEvaluator as DetectionEvaluator
    from .evaluation import gt_coco_dict as gt_coco_dict
    from .inference import Detector as Detector
    from .inference import detect_images as detect_images
    from .model import build_model as build_model
    from .model import load_model as load_model
    from .task import DetectionTask as DetectionTask

_EXPORTS = {
    "PRESETS": "config",
    "DetConfig": "config",
    "DetDataConfig": "config",
    "DetEvalConfig": "config",
    "DetModelConfig": "config",
    "COCOEvaluator": "evaluation",
    "DetectionEvaluator": "evaluation",
    "gt_coco_dict": "evaluation",
    "build_model": "model",
    "load_model": "model",
    "Detector": "inference",
    "detect_images": "inference",
    "DetectionTask": "task",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
