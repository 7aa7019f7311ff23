"""Face detection with five landmarks: RetinaFace on any registry backbone, WIDER FACE-ready.

Names are imported on first use, so that reading a config does not import torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # _EXPORTS' names, for editors, type checkers and grep
    from .config import PRESETS as PRESETS
    from .config import FaceDetConfig as FaceDetConfig
    from .config import FaceDetDataConfig as FaceDetDataConfig
    from .config import FaceDetEvalConfig as FaceDetEvalConfig
    from .config import FaceDetModelConfig as FaceDetModelConfig
    from .evaluation import FaceBoxEvaluator as FaceBoxEvaluator
    from .evaluation import WiderFaceEvaluator as WiderFaceEvaluator
    from .evaluation import wider_face_ap as wider_face_ap
    from .evaluation import write_wider_txt as write_wider_txt
    from .inference import FaceDetector as FaceDetector
    from .model import build_model as build_model
    from .model import convert_port_state_dict as convert_port_state_dict
    from .model import load_model as load_model
    from .task import FaceDetectionTask as FaceDetectionTask
    from .visualize import draw_faces as draw_faces

_EXPORTS = {
    "PRESETS": "config",
    "FaceDetConfig": "config",
    "FaceDetDataConfig": "config",
    "FaceDetEvalConfig": "config",
    "FaceDetModelConfig": "config",
    "FaceBoxEvaluator": "evaluation",
    "WiderFaceEvaluator": "evaluation",
    "wider_face_ap": "evaluation",
    "write_wider_txt": "evaluation",
    "build_model": "model",
    "convert_port_state_dict": "model",
    "load_model": "model",
    "FaceDetector": "inference",
    "draw_faces": "visualize",
    "FaceDetectionTask": "task",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
