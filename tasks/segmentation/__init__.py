"""Semantic segmentation: U-Net, DeepLabV3, DeepLabV3+ and FPN on any registry backbone.

Names are imported on first use, so that reading a config does not import torch."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PRESETS": "config",
    "InferenceConfig": "config",
    "SegConfig": "config",
    "SegDataConfig": "config",
    "SegModelConfig": "config",
    "SegLossConfig": "config",
    "SegmentationLoss": "losses",
    "ConfusionMatrix": "evaluation",
    "SegmentationEvaluator": "evaluation",
    "metrics_from_confusion": "evaluation",
    "build_model": "model",
    "convert_segmentation_state_dict": "model",
    "load_model": "model",
    "Segmenter": "inference",
    "predict_logits": "inference",
    "slide_logits": "inference",
    "SegmentationTask": "task",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
