"""Residual backbones behind one contract, and the one registry that names them.

>>> from resvision.backbones import create_backbone
>>> bb = create_backbone("resnet50", out_levels=("c3", "c4", "c5"), output_stride=16)
>>> [(s.name, s.channels, s.stride) for s in bb.feature_specs]
[('c3', 512, 8), ('c4', 1024, 16), ('c5', 2048, 16)]
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from . import iresnet, resnet  # noqa: F401  (registration by import)
from .base import ARCFACE, IMAGENET, NORM_POLICIES, Backbone, FeatureSpec, Normalization
from .registry import get_builder, list_backbones, register_backbone
from .weights import LoadReport, WeightsError, adapt_input_conv, load_backbone_weights

__all__ = [
    "ARCFACE",
    "IMAGENET",
    "NORM_POLICIES",
    "Backbone",
    "BackboneConfig",
    "FeatureSpec",
    "LoadReport",
    "Normalization",
    "WeightsError",
    "adapt_input_conv",
    "create_backbone",
    "list_backbones",
    "load_backbone_weights",
    "register_backbone",
]


def create_backbone(
    name: str,
    *,
    weights: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
    out_levels: Sequence[str] | None = None,
    output_stride: int | None = None,
    frozen_stages: int = 0,
    norm: str = "bn",
    in_channels: int = 3,
    strict: bool = True,
) -> Backbone:
    """Build a registered backbone.

    Args:
        name: a name from :func:`list_backbones` (``KeyError`` with close matches otherwise).
        weights: ``None`` (random init), a checkpoint path, a state_dict, or a tag such as
            ``"torchvision:IMAGENET1K_V2"`` / ``"timm:a1_in1k"`` (see ``backbones.weights``).
        out_levels: levels to emit, a subset of the family's (``c1``..``c5``); default
            ``c2``..``c5``. Stages after the last one are not built.
        output_stride: 8 | 16 | 32 for ResNets (dilation replaces the later strides), 8 | 16
            for iResNets; ``None`` is the family's native stride (32, iResNets 16).
        frozen_stages: 0 = nothing, 1 = stem, 2 = stem + c2, ..., 5 = all.
        norm: ``"bn"``, ``"frozen_bn"`` (statistics and affine fixed), ``"eval_bn"`` (affine
            trainable, statistics fixed) or ``"sync_bn"``.
        in_channels: input channels; pretrained RGB stem weights are adapted when != 3.
        strict: missing/unexpected checkpoint keys raise (True) or are logged (False).
    """
    if norm not in NORM_POLICIES:
        raise ValueError(f"norm={norm!r} is not one of {NORM_POLICIES}")
    model = get_builder(name)(
        out_levels=out_levels, output_stride=output_stride, in_channels=in_channels
    )
    model.arch = name
    if in_channels != 3:
        model.normalization = model.normalization.adapted(in_channels)
    if weights is not None:
        model.load_report = load_backbone_weights(model, weights, strict=strict)
    model.set_norm(norm)
    model.freeze(frozen_stages)
    return model


@dataclass
class BackboneConfig:
    """The :func:`create_backbone` options, as a config section (tasks extend it)."""

    backbone: str = "resnet50"
    weights: str | None = None  # backbone weights (path or tag); tasks also accept whole models
    output_stride: int | None = None
    frozen_stages: int = 0
    norm: str = "bn"
    in_channels: int = 3

    def create_backbone(self, out_levels: Sequence[str] | None, *, weights=None) -> Backbone:
        """The configured backbone emitting ``out_levels`` (``weights`` overrides the config's)."""
        return create_backbone(
            self.backbone,
            weights=weights,
            out_levels=out_levels,
            output_stride=self.output_stride,
            frozen_stages=self.frozen_stages,
            norm=self.norm,
            in_channels=self.in_channels,
        )
