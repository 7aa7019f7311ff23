"""Object detection: Faster R-CNN + FPN on any registry backbone, COCO-ready."""

from .config import PRESETS, DetConfig, DetDataConfig, DetEvalConfig, DetModelConfig
from .evaluation import COCOEvaluator, gt_coco_dict
from .inference import Detector, detect_images
from .task import DetectionTask

__all__ = [
    "PRESETS",
    "COCOEvaluator",
    "DetConfig",
    "DetDataConfig",
    "DetEvalConfig",
    "DetModelConfig",
    "DetectionTask",
    "Detector",
    "detect_images",
    "gt_coco_dict",
]
