"""The :func:`create_backbone` options as a config section (no torch import: configs are read
by the command line before anything is built)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Backbone


@dataclass
class BackboneConfig:
    """The :func:`create_backbone` options, as a config section (tasks extend it)."""

    backbone: str = "resnet50"
    weights: str | None = None  # backbone weights (path or tag); tasks also accept whole models
    output_stride: int | None = None
    frozen_stages: int = 0
    norm: str = "bn"
    in_channels: int = 3
    # depth options (see create_backbone): None = on unless plain; loaded weights overwrite it
    zero_init_residual: bool | None = None
    drop_path_rate: float = 0.0  # stochastic depth of the last block (linear from 0)
    activation_checkpointing: bool | tuple[str, ...] = False  # true or stages, e.g. [c4, c5]
    plain: bool = False  # no shortcuts (CIFAR families only)

    def create_backbone(self, out_levels: Sequence[str] | None, *, weights=None) -> Backbone:
        """The configured backbone emitting ``out_levels`` (``weights`` overrides the config's)."""
        from .factory import create_backbone

        return create_backbone(
            self.backbone,
            weights=weights,
            out_levels=out_levels,
            output_stride=self.output_stride,
            frozen_stages=self.frozen_stages,
            norm=self.norm,
            in_channels=self.in_channels,
            zero_init_residual=self.zero_init_residual,
            drop_path_rate=self.drop_path_rate,
            activation_checkpointing=self.activation_checkpointing,
            plain=self.plain,
        )
