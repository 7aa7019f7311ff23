"""Backbone weights: where they come from (:mod:`.sources`) and how they load (:mod:`.loading`)."""

from .loading import LoadReport, adapt_input_conv, detect_layout, load_backbone_weights
from .sources import (
    CHECKPOINT_SUFFIXES,
    WeightsError,
    extract_state_dict,
    read_checkpoint,
    resolve_weights,
)

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "LoadReport",
    "WeightsError",
    "adapt_input_conv",
    "detect_layout",
    "extract_state_dict",
    "load_backbone_weights",
    "read_checkpoint",
    "resolve_weights",
]
