"""Building a registered backbone: weights, norm policy, freezing and the depth options.

The families register their names when imported: the plain imports below are the registry's
list of families (a new family is one module and one name here).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence

import torch

# the families, which register their names when imported
import resvision.backbones.cifar
import resvision.backbones.iresnet
import resvision.backbones.preact
import resvision.backbones.resnet  # noqa: F401

from .base import NORM_POLICIES, Backbone
from .registry import get_builder, list_backbones
from .weights import load_backbone_weights

__all__ = ["create_backbone", "list_backbones"]


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
    zero_init_residual: bool | None = None,
    drop_path_rate: float = 0.0,
    activation_checkpointing: bool | Sequence[str] = False,
    plain: bool = False,
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
        zero_init_residual: start every residual branch at zero (the last norm's scale; for
            pre-activation blocks the last convolution), so every block starts as its
            shortcut. ``None`` = on, except for ``plain`` nets. Loaded weights overwrite it.
        drop_path_rate: stochastic depth; the drop probability rises linearly with the block
            index from 0 (first block) to this value (last block). Training mode only.
        activation_checkpointing: ``True`` (every trainable stage) or stage names such as
            ``("c4", "c5")`` whose blocks recompute their activations in the backward pass.
        plain: remove every shortcut and nothing else (the CIFAR families; He et al.'s plain
            nets). ``ValueError`` for families without the option.
    """
    if norm not in NORM_POLICIES:
        raise ValueError(f"norm={norm!r} is not one of {NORM_POLICIES}")
    builder = get_builder(name)
    options = {}
    if plain:
        if "plain" not in inspect.signature(builder).parameters:
            with_plain = [
                n
                for n in list_backbones()
                if "plain" in inspect.signature(get_builder(n)).parameters
            ]
            raise ValueError(
                f"plain=True is not available for {name}: only these backbones have a plain "
                f"(shortcut-free) variant: {', '.join(with_plain)}"
            )
        options["plain"] = True
    if zero_init_residual is None:
        zero_init_residual = not plain
    elif zero_init_residual and plain:
        raise ValueError(
            "zero_init_residual=True with plain=True would start every layer at zero (a plain "
            "net has no shortcut to pass the input on); use zero_init_residual=False"
        )
    model = builder(
        out_levels=out_levels, output_stride=output_stride, in_channels=in_channels, **options
    )
    model.arch = name
    if in_channels != 3:
        model.normalization = model.normalization.adapted(in_channels)
    model.plain = plain
    if zero_init_residual:
        model.zero_init_residual_branches()
    model.set_drop_path_rate(drop_path_rate)
    if weights is not None:
        model.load_report = load_backbone_weights(model, weights, strict=strict)
    model.set_norm(norm)
    model.freeze(frozen_stages)
    model.set_activation_checkpointing(activation_checkpointing)
    return model
