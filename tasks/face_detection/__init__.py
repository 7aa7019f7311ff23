"""Face detection with five landmarks: RetinaFace on any registry backbone, WIDER FACE-ready.

Names are imported on first use, so that reading a config does not import torch."""

from __future__ import annotations

import importlib
from typing import Any

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
