"""Feature pyramid neck: torchvision's FPN on a backbone's declared levels, P2-P6."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from resvision.backbones import Backbone, FeatureSpec


class FPN(nn.Module):
    """``body`` (the backbone) + ``fpn`` (torchvision's FeaturePyramidNetwork).

    Reads the backbone's ``c2``..``c5`` (sized from its ``feature_specs``) and emits ``p2``..``p5``
    plus ``p6`` by max-pooling ``p5`` (kernel 1, stride 2), all with ``out_channels`` channels.
    The module names match torchvision's ``BackboneWithFPN`` (``body.*``, ``fpn.*``), so a
    torchvision detector's ``backbone.*`` weights load unchanged.
    """

    def __init__(
        self, backbone: Backbone, out_channels: int = 256, norm_layer: type[nn.Module] | None = None
    ) -> None:
        super().__init__()
        specs = backbone.feature_specs
        if [s.name for s in specs] != ["c2", "c3", "c4", "c5"]:
            raise ValueError(f"FPN reads c2..c5; the backbone emits {[s.name for s in specs]}")
        self.body = backbone
        self.fpn = FeaturePyramidNetwork(
            [s.channels for s in specs],
            out_channels,
            extra_blocks=LastLevelMaxPool(),
            norm_layer=norm_layer,
        )
        self.out_channels = out_channels
        self.out_specs = tuple(
            FeatureSpec(f"p{s.name[1]}", out_channels, s.stride) for s in specs
        ) + (FeatureSpec("p6", out_channels, specs[-1].stride * 2),)

    @property
    def size_divisibility(self) -> int:
        """The input multiple for aligned levels: the backbone's (P6 pools P5 with kernel 1)."""
        return self.body.size_divisibility

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        out = self.fpn(OrderedDict(self.body(x)))
        return OrderedDict((spec.name, value) for spec, value in zip(self.out_specs, out.values()))
