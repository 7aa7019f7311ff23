"""Face recognition: iResNet embeddings, margin losses with Partial FC, verification protocols."""

from .config import PRESETS, FaceConfig, FaceDataConfig, FaceModelConfig, MarginConfig
from .inference import Embedder, cluster, search
from .task import FaceTask, FaceTrainingModel, convert_face_state_dict
from .verification import evaluate_embeddings, reference_evaluate

__all__ = [
    "PRESETS",
    "Embedder",
    "FaceConfig",
    "FaceDataConfig",
    "FaceModelConfig",
    "FaceTask",
    "FaceTrainingModel",
    "MarginConfig",
    "cluster",
    "convert_face_state_dict",
    "evaluate_embeddings",
    "reference_evaluate",
    "search",
]
