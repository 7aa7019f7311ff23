"""Semantic segmentation: U-Net, DeepLabV3, DeepLabV3+ and FPN on any registry backbone.

Names are imported on first use, so that reading a config does not import torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # _EXPORTS' names, for editors, type checkers and grep
    from .config import PRESETS as PRESETS
    from .config import InferenceConfig as InferenceConfig
    from .config import SegConfig as SegConfig
    from .config import SegDataConfig as SegDataConfig
    from .config import SegLossConfig as SegLossConfig
    from .config import SegModelConfig as SegModelConfig
    from .evaluation import ConfusionMatrix as ConfusionMatrix
    from .evaluation import SegmentationEvaluator as SegmentationEvaluator
    from .evaluation import metrics_from_confusion as metrics_from_confusion
    from .inference import Segmenter as Segmenter
    from .inference import predict_logits as predict_logits
    from .inference import slide_logits as slide_logits
    from .losses import SegmentationLoss as SegmentationLoss
    from .model import build_model as build_model
    from .model import convert_segmentation_state_dict as convert_segmentation_state_dict
    from .model import load_model as load_model
    from .task import SegmentationTask as SegmentationTask

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
