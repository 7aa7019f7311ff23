"""ResNet, ResNeXt, Wide ResNet and ResNet-D: timm's modules behind the resvision contract.

timm's ``ResNet`` is the same network as torchvision's (identical state_dict keys, stride on the
3x3 conv, "V1.5") and additionally builds the -D variants (deep 3x3 stem, average-pool
shortcut) and dilation for output stride 8/16 in both block types. The wrapper keeps timm's
module names at the top level, so a torchvision or timm state_dict loads without renaming.

Dilation follows torchvision/timm (and MMSegmentation's ``contract_dilation``): in a dilated
stage the first block keeps the previous dilation and the others use the new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import timm
import torch
from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

from .base import IMAGENET, STAGES, Backbone, FeatureSpec
from .registry import family_builder, register_backbone

RESNET_NAMES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "resnet18d",
    "resnet34d",
    "resnet50d",
    "resnet101d",
    "resnet152d",
)


def timm_trunk(
    arch: str, output_stride: int, in_channels: int, allowed: Sequence[int]
) -> nn.Module:
    """timm's ``arch`` without classifier or pooling, checked arguments first."""
    if output_stride not in allowed:
        raise ValueError(
            f"output_stride={output_stride!r} is not supported by {arch}; choose one of {allowed}"
        )
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
    return timm.create_model(
        arch,
        pretrained=False,
        num_classes=0,
        global_pool="",
        output_stride=output_stride,
        in_chans=in_channels,
        zero_init_last=False,  # create_backbone zeroes the branches (zero_init_residual)
    )


class ResNet(Backbone):
    """A ResNet-family trunk with levels ``c1`` (stem, stride 2) and ``c2``..``c5``.

    Build with :func:`resvision.backbones.create_backbone`; ``arch`` is the timm model name.
    """

    def __init__(
        self,
        arch: str,
        *,
        out_levels: Sequence[str] | None = None,
        output_stride: int | None = None,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        output_stride = 32 if output_stride is None else output_stride
        net = timm_trunk(arch, output_stride, in_channels, self.output_strides)
        self.arch = arch
        self.output_stride = output_stride
        self.conv1, self.bn1, self.act1, self.maxpool = net.conv1, net.bn1, net.act1, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        channels = [self.bn1.num_features] + [
            _last_channels(getattr(self, f"layer{i}")) for i in range(1, 5)
        ]
        strides = [2, 4, 8, min(16, output_stride), min(32, output_stride)]
        specs = [FeatureSpec(f"c{i + 1}", c, s) for i, (c, s) in enumerate(zip(channels, strides))]
        self._init_contract(specs, out_levels, IMAGENET)

    @property
    def first_conv(self) -> str:
        """State-dict key of the input convolution (adapted when ``in_channels != 3``)."""
        return "conv1.0.weight" if isinstance(self.conv1, nn.Sequential) else "conv1.weight"

    def level_prefixes(self) -> dict[str, tuple[str, ...]]:
        return {"c1": ("conv1.", "bn1."), **{f"c{i + 1}": (f"layer{i}.",) for i in range(1, 5)}}

    def _forward_level(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if name == "c1":
            return self.act1(self.bn1(self.conv1(x)))
        if name == "c2":
            return self.layer1(self.maxpool(x))
        return getattr(self, f"layer{int(name[1]) - 1}")(x)

    def _drop_level(self, name: str) -> None:
        setattr(self, f"layer{int(name[1]) - 1}", None)

    def conv_norm_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """Stem conv -> bn1, every block's convN -> bnN, and each conv -> norm in Sequentials
        (deep stems, shortcut projections)."""
        stem = self.conv1[-1] if isinstance(self.conv1, nn.Sequential) else self.conv1
        pairs = [(stem, self.bn1)]
        for module in self.modules():
            if isinstance(module, nn.Sequential):
                kids = list(module)
                pairs += [(a, b) for a, b in pairwise(kids) if isinstance(a, nn.Conv2d)]
            elif isinstance(module, BasicBlock | Bottleneck):
                pairs += [
                    (getattr(module, f"conv{i}"), getattr(module, f"bn{i}"))
                    for i in (1, 2, 3)
                    if hasattr(module, f"conv{i}")
                ]
        return pairs

    def stage_blocks(self) -> dict[str, nn.Sequential]:
        layers = {f"c{i + 1}": getattr(self, f"layer{i}") for i in range(1, 5)}
        return {level: layer for level, layer in layers.items() if layer is not None}

    def stage_modules(self) -> list[list[nn.Module]]:
        stem = [self.conv1, self.bn1, self.act1]
        layers = [getattr(self, f"layer{i}") for i in range(1, 5)]
        mods = [stem] + [[m] if m is not None else [] for m in layers]
        assert len(mods) == len(STAGES)
        return mods


def _last_channels(layer: nn.Sequential) -> int:
    block = layer[-1]
    last_bn = block.bn3 if hasattr(block, "bn3") else block.bn2
    return last_bn.num_features


for _arch in RESNET_NAMES:
    register_backbone(
        _arch,
        family_builder(
            _arch,
            ResNet,
            _arch,
            doc=f"{_arch} (timm/torchvision architecture) behind the resvision contract.",
        ),
    )
