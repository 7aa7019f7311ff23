"""Building a segmentation model from its config, foreign weights, and trained checkpoints."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from resvision.backbones.weights import extract_state_dict, read_checkpoint
from resvision.heads.segmentation import SegmentationModel, build_segmentation_model
from resvision.tasks.engine.checkpoint import (
    load_for_inference,
    load_model_weights,
    load_state_dict_checked,
)
from resvision.tasks.engine.runtime import resolve_device

from .config import SegConfig
from .losses import SegmentationLoss

log = logging.getLogger(__name__)
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
    weights, whole = cfg.model.weights, None
    if weights and Path(weights).is_file():
        sd = extract_state_dict(read_checkpoint(weights), source=weights)
        whole = convert_segmentation_state_dict(sd)
        weights = None if whole is not None else sd
    model = build_segmentation_model(cfg.model, criterion, backbone_weights=weights)
    if whole is not None:
        load_state_dict_checked(
            model,
            whole,
            source=str(cfg.model.weights),
            hint="check model.arch, model.backbone, model.num_classes and the head options of "
            "the preset it came from",
        )
        log.info("loaded a whole segmentation model from %s", cfg.model.weights)
    return model


def load_model(
    checkpoint: str | Path, *, device: str = "auto", overrides: Sequence[str] = ()
) -> tuple[SegmentationModel, SegConfig, dict[str, Any]]:
    """A trained model (eval mode, the checkpoint's EMA weights when it has them), its config
    and meta (``class_names``), from a checkpoint file or a run folder."""
    state, cfg = load_for_inference(
        checkpoint, task=TASK, config_class=SegConfig, overrides=overrides
    )
    model = build_model(cfg)
    load_model_weights(model, state)
    model.to(resolve_device(device)).eval()
    meta = dict(state.get("meta") or {})
    meta.setdefault("class_names", [str(i) for i in range(cfg.model.num_classes)])
    return model, cfg, meta
