"""Building a detector from its config, torchvision's weights, and trained checkpoints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from resvision.heads.detection import FasterRCNN
from resvision.tasks.engine.checkpoint import (
    build_with_weights,
    load_trained_model,
)

from .config import DetConfig

TASK = "detection"


def whole_detector_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """``sd`` as a whole detector (resvision's or torchvision's layout, which are the same), or
    None if it holds backbone weights only."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if any(k.startswith("rpn.") for k in sd) and any(k.startswith("roi_heads.") for k in sd):
        return sd
    return None


def build_model(cfg: DetConfig) -> FasterRCNN:
    """The detector of a (finalized) config; ``model.weights`` may name backbone weights or a
    whole detector (detected by its keys)."""
    return build_with_weights(
        cfg.model.weights,
        lambda weights: FasterRCNN(
            cfg.model.create_backbone(("c2", "c3", "c4", "c5"), weights=weights), cfg.model
        ),
        whole_model=whole_detector_state_dict,
        hint="check model.num_classes, model.head_norm and model.rpn.conv_depth",
    )


def load_model(
    checkpoint: str | Path, *, device: str = "auto", overrides: Sequence[str] = ()
) -> tuple[FasterRCNN, DetConfig, dict[str, Any]]:
    """A trained detector (eval mode, the checkpoint's EMA weights when it has them), its config
    and meta (``class_names``, ``category_ids``), from a checkpoint file or a run folder."""
    model, cfg, meta = load_trained_model(
        checkpoint,
        build_model,
        task=TASK,
        config_class=DetConfig,
        device=device,
        overrides=overrides,
    )
    meta.setdefault("class_names", [str(i) for i in range(1, cfg.model.num_classes + 1)])
    return model, cfg, meta
