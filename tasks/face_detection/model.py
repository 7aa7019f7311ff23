"""Building RetinaFace from its config, the PyTorch port's weights, and trained checkpoints."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from resvision.backbones.weights import extract_state_dict, read_checkpoint
from resvision.heads.retinaface import RetinaFace
from resvision.tasks.engine.checkpoint import (
    build_with_weights,
    load_trained_model,
)
from resvision.tasks.engine.config import apply_overrides
from resvision.tasks.engine.errors import CheckpointError
from resvision.tasks.engine.runtime import resolve_device

from .config import PRESETS, FaceDetConfig

log = logging.getLogger(__name__)
TASK = "face-detection"

# the port's module names -> ours (body.* is torchvision's ResNet, the same keys as ours)
_PORT_RENAMES = (
    (r"^body\.", "backbone."),
    (r"^fpn\.output(\d)\.", lambda m: f"fpn.lateral.{int(m[1]) - 1}."),
    (r"^fpn\.merge(\d)\.", lambda m: f"fpn.merge.{int(m[1]) - 1}."),
    (r"^ssh(\d)\.", lambda m: f"context.{int(m[1]) - 1}."),
    (r"^ClassHead\.(\d)\.conv1x1\.", r"class_head.\1."),
    (r"^BboxHead\.(\d)\.conv1x1\.", r"box_head.\1."),
    (r"^LandmarkHead\.(\d)\.conv1x1\.", r"landmark_head.\1."),
)
_PORT_SSH = {
    "conv3X3": "conv3x3",
    "conv5X5_1": "conv5x5_1",
    "conv5X5_2": "conv5x5_2",
    "conv7X7_2": "conv7x7_2",
    "conv7x7_3": "conv7x7_3",
}


def is_port_state_dict(sd: Mapping[str, Any]) -> bool:
    """Whether ``sd`` is a Pytorch_Retinaface model (``body.*``, ``ClassHead.*``, ...)."""
    keys = {k.removeprefix("module.") for k in sd}
    return any(k.startswith("ClassHead.") for k in keys) and any(
        k.startswith("body.") for k in keys
    )


def convert_port_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Pytorch_Retinaface state_dict (``Resnet50_Final.pth``: ``body.*``, ``fpn.*``,
    ``ssh1..3.*``, ``ClassHead.*``, ``BboxHead.*``, ``LandmarkHead.*``, optionally under
    ``module.``) in :class:`RetinaFace`'s layout. The tensors are unchanged: the heads' output
    channels are ordered by prior then value in both."""
    out = {}
    for key, value in sd.items():
        new = key.removeprefix("module.")
        for pattern, repl in _PORT_RENAMES:
            new = re.sub(pattern, repl, new)
        if new.startswith("context."):
            parts = new.split(".")
            parts[2] = _PORT_SSH.get(parts[2], parts[2])
            new = ".".join(parts)
        out[new] = value
    return out


def whole_model_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """``sd`` as a whole RetinaFace in our layout (converted from the port's when it is one),
    or None when it holds backbone weights only."""
    if is_port_state_dict(sd):
        return convert_port_state_dict(sd)
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if any(k.startswith("class_head.") for k in sd) and any(k.startswith("backbone.") for k in sd):
        return sd
    return None


def build_model(cfg: FaceDetConfig) -> RetinaFace:
    """The RetinaFace of a config; ``model.weights`` may name backbone weights or a whole model
    (resvision's or the PyTorch port's, told apart by their keys)."""

    def whole_model(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        if is_port_state_dict(sd) and cfg.model.input_format != "bgr_mean":
            log.warning(
                "%s is a Pytorch_Retinaface model, which expects BGR minus 104/117/123: set "
                "model.input_format=bgr_mean (the retinaface_r50 preset does)",
                cfg.model.weights,
            )
        return whole_model_state_dict(sd)

    return build_with_weights(
        cfg.model.weights,
        lambda weights: RetinaFace(
            cfg.model.create_backbone(cfg.model.levels, weights=weights), cfg.model
        ),
        whole_model=whole_model,
        hint="check model.backbone, model.fpn_channels and model.priors.min_sizes",
    )


def port_config(path: str | Path, overrides: Sequence[str] = ()) -> FaceDetConfig:
    """The config that runs a Pytorch_Retinaface ResNet-50 file: ``retinaface_r50`` with the
    file as its weights."""
    cfg = PRESETS["retinaface_r50"]()
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights=str(path)))
    return apply_overrides(cfg, overrides)


def load_model(
    checkpoint: str | Path, *, device: str = "auto", overrides: Sequence[str] = ()
) -> tuple[RetinaFace, FaceDetConfig, dict[str, Any]]:
    """A face detector (eval mode, the checkpoint's EMA weights when it has them), its config
    and meta, from a resvision run folder or checkpoint, or from the PyTorch port's
    ``Resnet50_Final.pth`` (then with ``retinaface_r50``'s config)."""
    try:
        return load_trained_model(
            checkpoint,
            build_model,
            task=TASK,
            config_class=FaceDetConfig,
            device=device,
            overrides=overrides,
        )
    except CheckpointError:
        if not _is_port_file(Path(checkpoint)):
            raise
    cfg = port_config(checkpoint, overrides)
    model = build_model(cfg).to(resolve_device(device)).eval()
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights=None))
    return model, cfg, {"source": str(checkpoint)}


def _is_port_file(path: Path) -> bool:
    """Whether ``path`` is a file holding a Pytorch_Retinaface state_dict."""
    if not path.is_file():
        return False
    try:
        return is_port_state_dict(extract_state_dict(read_checkpoint(path), source=str(path)))
    except (OSError, ValueError):
        return False
