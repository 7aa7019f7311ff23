"""Semantic segmentation: U-Net, DeepLabV3, DeepLabV3+ and FPN on any registry backbone."""

from .config import PRESETS, SegConfig, SegDataConfig, SegModelConfig
from .inference import InferenceConfig, Segmenter, predict_logits, slide_logits
from .losses import SegLossConfig, SegmentationLoss
from .metrics import ConfusionMatrix, metrics_from_confusion
from .task import SegmentationTask, convert_segmentation_state_dict

__all__ = [
    "PRESETS",
    "ConfusionMatrix",
    "InferenceConfig",
    "SegConfig",
    "SegDataConfig",
    "SegLossConfig",
    "SegModelConfig",
    "SegmentationLoss",
    "SegmentationTask",
    "Segmenter",
    "convert_segmentation_state_dict",
    "metrics_from_confusion",
    "predict_logits",
    "slide_logits",
]
