"""Object detection: Faster R-CNN + FPN on any registry backbone, COCO-ready.

Names are imported on first use, so that reading a config does not import torch."""

from __future__ import annotations

import importlib
from typing import Any

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
