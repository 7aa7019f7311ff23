"""The face-recognition iResNets, as InsightFace's ``arcface_torch`` defines them.

No listed library provides them, so they are implemented here with arcface_torch's module names
(a ``backbone.pth`` trunk loads without renaming): a 3x3 stride-1 stem with PReLU, then four
stages of ``IBasicBlock`` (BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus the
shortcut), every stage at stride 2. At 112x112 the levels ``c2``..``c5`` are 56, 28, 14 and 7
pixels (strides 2/4/8/16). The "E" embedding output (BN2d -> dropout -> FC -> BN1d) is a head
(``resvision.heads``), not part of the trunk.

Beyond arcface_torch, ``output_stride=8`` dilates the last stage (first block keeps the
previous dilation, as torchvision does), for dense tasks on face crops.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import ARCFACE, Backbone, FeatureSpec
from .registry import family_builder, register_backbone

IRESNET_LAYERS = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
    "iresnet200": (6, 26, 60, 6),
}
WIDTHS = (64, 128, 256, 512)


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(
        in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
    )


class IBasicBlock(nn.Module):
    """BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus the (projected) input."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        first_dilation: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=1e-5)
        self.conv1 = _conv3x3(in_channels, channels, dilation=first_dilation)
        self.bn2 = nn.BatchNorm2d(channels, eps=1e-5)
        self.prelu = nn.PReLU(channels)
        self.conv2 = _conv3x3(channels, channels, stride=stride, dilation=dilation)
        self.bn3 = nn.BatchNorm2d(channels, eps=1e-5)
        self.downsample = downsample
        self.drop_path: nn.Module = nn.Identity()  # stochastic depth (set_drop_path_rate)

    def zero_init_last(self) -> None:
        """Zero the last norm's scale: the block starts as its shortcut."""
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return self.drop_path(out) + identity


class IResNet(Backbone):
    """InsightFace iResNet trunk; levels ``c2``..``c5`` at strides 2/4/8/16 (no ``c1``)."""

    output_strides = (8, 16)

    def __init__(
        self,
        layers: Sequence[int],
        *,
        out_levels: Sequence[str] | None = None,
        output_stride: int | None = None,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        output_stride = 16 if output_stride is None else output_stride
        if output_stride not in self.output_strides:
            raise ValueError(
                f"output_stride={output_stride!r} is not supported by iResNets; "
                f"choose one of {self.output_strides}"
            )
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        self.output_stride = output_stride
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        in_ch, stride_so_far, dilation = 64, 1, 1
        strides = []
        for i, (num_blocks, width) in enumerate(zip(layers, WIDTHS), start=1):
            stride, first_dilation = 2, dilation
            if stride_so_far * 2 > output_stride:
                dilation, stride = dilation * 2, 1
            stride_so_far *= stride
            strides.append(stride_so_far)
            downsample = nn.Sequential(
                nn.Conv2d(in_ch, width, 1, stride=stride, bias=False),
                nn.BatchNorm2d(width, eps=1e-5),
            )
            blocks = [
                IBasicBlock(
                    in_ch,
                    width,
                    stride=stride,
                    dilation=first_dilation,
                    first_dilation=first_dilation,
                    downsample=downsample,
                )
            ]
            blocks += [
                IBasicBlock(width, width, dilation=dilation, first_dilation=dilation)
                for _ in range(num_blocks - 1)
            ]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            in_ch = width
        self._reset_parameters()
        specs = [FeatureSpec(f"c{i + 2}", w, s) for i, (w, s) in enumerate(zip(WIDTHS, strides))]
        self._init_contract(specs, out_levels, ARCFACE)

    def _reset_parameters(self) -> None:
        # arcface_torch's initialisation
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    embedding_head = "iresnet"  # InsightFace's "E" output: flatten the fixed-size last map

    @property
    def first_conv(self) -> str:
        return "conv1.weight"

    def level_prefixes(self) -> dict[str, tuple[str, ...]]:
        stem = ("conv1.", "bn1.", "prelu.")
        return {f"c{i + 1}": (stem if i == 1 else ()) + (f"layer{i}.",) for i in range(1, 5)}

    def _forward_level(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if name == "c2":
            x = self.prelu(self.bn1(self.conv1(x)))
        return getattr(self, f"layer{int(name[1]) - 1}")(x)

    def _drop_level(self, name: str) -> None:
        setattr(self, f"layer{int(name[1]) - 1}", None)

    def stage_blocks(self) -> dict[str, nn.Sequential]:
        layers = {f"c{i + 1}": getattr(self, f"layer{i}") for i in range(1, 5)}
        return {level: layer for level, layer in layers.items() if layer is not None}

    def stage_modules(self) -> list[list[nn.Module]]:
        layers = [getattr(self, f"layer{i}") for i in range(1, 5)]
        return [[self.conv1, self.bn1, self.prelu]] + [[m] if m is not None else [] for m in layers]

    def head_keys(self) -> tuple[str, ...]:
        # arcface_torch's "E" output: bn2 -> dropout -> fc -> features (BatchNorm1d)
        return ("bn2.", "fc.", "features.")


for _name, _layers in IRESNET_LAYERS.items():
    register_backbone(
        _name,
        family_builder(
            _name,
            IResNet,
            _layers,
            doc=f"{_name}: InsightFace arcface_torch iResNet, blocks per stage {_layers}.",
        ),
    )
