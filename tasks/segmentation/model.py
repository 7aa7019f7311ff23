"""Building a segmentation model from its config, foreign weights, and trained checkpoints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from resvision.heads.segmentation import SegmentationModel, build_segmentation_model
from resvision.tasks.engine.checkpoint import (
    build_with_weights,
    load_trained_model,
)

from .config import SegConfig
from .losses import SegmentationLoss

TASK = "segmentation"


def _layout(sd: Mapping[str, torch.Tensor]) -> str | None:
    keys = list(sd)
    if any(k.startswith("segmentation_head.") for k in keys):
        return "smp" if any(k.startswith("encoder.") for k in keys) else "resvision"
    if any(k.startswith("classifier.") for k in keys) and any(
        k.startswith("backbone.") for k in keys
    ):
        return "torchvision"
    return None


_TORCHVISION_RENAMES = (
    ("classifier.0.", "decoder.aspp."),
    ("classifier.1.", "decoder.conv."),
    ("classifier.2.", "decoder.bn."),
    ("classifier.4.", "segmentation_head.0."),
    ("aux_classifier.", "aux_head."),
)


def convert_segmentation_state_dict(
    sd: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor] | None:
    """A whole-model state_dict (resvision's, smp's or torchvision's ``deeplabv3_resnet50``)
    in resvision's layout, or None if ``sd`` holds backbone weights only."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    layout = _layout(sd)
    if layout is None:
        return None
    out = {}
    for key, value in sd.items():
        if layout == "smp" and key.startswith("encoder."):
            key = "backbone." + key[len("encoder.") :]
        elif layout == "torchvision":
            for old, new in _TORCHVISION_RENAMES:
                if key.startswith(old):
                    key = new + key[len(old) :]
                    break
        out[key] = value
    return out


def build_model(cfg: SegConfig) -> SegmentationModel:
    """The model of a (finalized) config, with its loss; ``model.weights`` may name backbone
    weights or a whole model (detected by its keys)."""
    criterion = SegmentationLoss(cfg.loss, cfg.model.num_classes, cfg.data.ignore_index)
    return build_with_weights(
        cfg.model.weights,
        lambda weights: build_segmentation_model(cfg.model, criterion, backbone_weights=weights),
        whole_model=convert_segmentation_state_dict,
        hint="check model.arch, model.backbone, model.num_classes and the head options of "
        "the preset it came from",
    )


def load_model(
    checkpoint: str | Path, *, device: str = "auto", overrides: Sequence[str] = ()
) -> tuple[SegmentationModel, SegConfig, dict[str, Any]]:
    """A trained model (eval mode, the checkpoint's EMA weights when it has them), its config
    and meta (``class_names``), from a checkpoint file or a run folder."""
    model, cfg, meta = load_trained_model(
        checkpoint,
        build_model,
        task=TASK,
        config_class=SegConfig,
        device=device,
        overrides=overrides,
    )
    meta.setdefault("class_names", [str(i) for i in range(cfg.model.num_classes)])
    return model, cfg, meta
