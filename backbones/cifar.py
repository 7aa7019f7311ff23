"""The CIFAR ResNets of He et al.: small images, very deep, with or without shortcuts.

- ``cifar_resnet20/32/44/56/110/1202`` (He et al. 2015, section 4.2): a 3x3 convolution with 16
  channels at stride 1, then three stages of ``n = (depth - 2) / 6`` basic blocks (conv3x3-BN-
  ReLU-conv3x3-BN, add, ReLU) with 16, 32 and 64 channels, the second and third starting at
  stride 2. Shortcuts are **option A**, as in the paper's CIFAR experiments: the identity,
  subsampled by 2 and zero-padded with ``channels / 4`` empty channels on each side where the
  width doubles. Option A has no parameters, so a plain net has exactly the same parameters.
- ``cifar_preact_resnet164/1001`` (He et al. 2016, "Identity Mappings"): pre-activation
  bottlenecks (BN-ReLU-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1), ``n = (depth - 2) / 9`` per
  stage, 64/128/256 output channels (16/32/64 inside), stride on the 3x3 convolution, a 1x1
  projection shortcut (option B) where the shape changes (fed with the block's pre-activation,
  as the authors' code does), and a final BN-ReLU after the last stage.

``plain=True`` removes every shortcut and nothing else: the same layers, each block returns its
residual branch (the pre-activation nets also lose their projection convolutions, which belong to
the shortcut).

Levels follow the contract's rule "named by stage, real strides": the stem runs at stride 1, so
there is no ``c1`` (as for the iResNets), and the three stages are ``c2`` (stride 1), ``c3``
(stride 2) and ``c4`` (stride 4); there is no ``c5``. For the pre-activation nets ``c4`` carries
the final BN-ReLU (its keys ``norm.*`` go with ``c4``); ``c2`` and ``c3`` are the stages' sums
before any norm. Module names follow the common PyTorch CIFAR layout (``conv1``, ``bn1``,
``layer1``..``layer3``, blocks with ``conv1``/``bn1``/``conv2``/``bn2``); the classifier
(``linear.`` or ``fc.``) is dropped on loading.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import Backbone, FeatureSpec, Normalization
from .registry import family_builder, register_backbone

CIFAR10 = Normalization((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
BASIC_DEPTHS = (20, 32, 44, 56, 110, 1202)
PREACT_DEPTHS = (164, 1001)
BASIC_WIDTHS = (16, 32, 64)
PREACT_WIDTHS = (64, 128, 256)


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)


class OptionAShortcut(nn.Module):
    """He et al.'s option A: subsample by ``stride`` and zero-pad the new channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = out_channels - in_channels
        self.pad = (extra // 2, extra - extra // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, *self.pad))


class CifarBasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the option-A shortcut (unless plain), then ReLU."""

    def __init__(self, in_channels: int, channels: int, *, stride: int = 1, plain: bool = False):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = _conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut: nn.Module | None = None
        if not plain:
            reshape = stride != 1 or in_channels != channels
            self.shortcut = OptionAShortcut(in_channels, channels, stride) if reshape else None
        self.plain = plain
        self.drop_path: nn.Module = nn.Identity()

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.plain:
            return F.relu(out)
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(self.drop_path(out) + identity)


class CifarPreActBottleneck(nn.Module):
    """BN-ReLU-conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1, plus the shortcut (unless plain)."""

    def __init__(self, in_channels: int, channels: int, *, stride: int = 1, plain: bool = False):
        super().__init__()
        mid = channels // 4
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = _conv3x3(mid, mid, stride)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, channels, 1, bias=False)
        self.shortcut: nn.Module | None = None
        if not plain and (stride != 1 or in_channels != channels):
            self.shortcut = nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False)
        self.plain = plain
        self.drop_path: nn.Module = nn.Identity()

    def zero_init_last(self) -> None:
        # no norm after the last convolution in a pre-activation block: zero the convolution
        nn.init.zeros_(self.conv3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        if self.plain:
            return out
        identity = x if self.shortcut is None else self.shortcut(pre)
        return self.drop_path(out) + identity


class CifarResNet(Backbone):
    """He et al.'s CIFAR ResNets; levels ``c2``/``c3``/``c4`` at strides 1/2/4 (no c1, no c5).

    Build with :func:`resvision.backbones.create_backbone` (``plain=True`` for the plain net).
    """

    output_strides = (4,)

    def __init__(
        self,
        depth: int,
        *,
        preact: bool = False,
        plain: bool = False,
        out_levels: Sequence[str] | None = None,
        output_stride: int | None = None,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        output_stride = 4 if output_stride is None else output_stride
        if output_stride not in self.output_strides:
            raise ValueError(
                f"output_stride={output_stride!r} is not supported by the CIFAR ResNets "
                f"(3 stages at strides 1, 2, 4; no dilation); choose one of {self.output_strides}"
            )
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        per_layer = 9 if preact else 6
        num_blocks, rest = divmod(depth - 2, per_layer)
        assert rest == 0 and num_blocks > 0, depth
        self.depth, self.preact, self.plain = depth, preact, plain
        self.output_stride = output_stride
        widths = PREACT_WIDTHS if preact else BASIC_WIDTHS
        block = CifarPreActBottleneck if preact else CifarBasicBlock
        self.conv1 = _conv3x3(in_channels, 16)
        # the pre-activation nets normalise in the first block (both branches) instead
        self.bn1 = None if preact else nn.BatchNorm2d(16)
        in_ch = 16
        for i, width in enumerate(widths, start=1):
            stride = 1 if i == 1 else 2
            blocks = [block(in_ch, width, stride=stride, plain=plain)]
            blocks += [block(width, width, plain=plain) for _ in range(num_blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            in_ch = width
        self.norm = nn.BatchNorm2d(in_ch) if preact else None
        self._reset_parameters()
        specs = [FeatureSpec(f"c{i + 2}", w, 2**i) for i, w in enumerate(widths)]
        self._init_contract(specs, out_levels, CIFAR10, default_levels=("c2", "c3", "c4"))

    def _reset_parameters(self) -> None:
        # He et al.: "we use the weight initialization in [13]" (Kaiming normal, fan_out here as
        # in torchvision); norms start at scale 1, shift 0
        if self.conv1.weight.is_meta:  # shapes only (`resvision backbones`): nothing to draw
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def first_conv(self) -> str:
        return "conv1.weight"

    def _forward_level(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if name == "c2":
            x = self.conv1(x)
            if self.bn1 is not None:
                x = F.relu(self.bn1(x))
        x = getattr(self, f"layer{int(name[1]) - 1}")(x)
        if name == "c4" and self.norm is not None:
            x = F.relu(self.norm(x))
        return x

    def _drop_level(self, name: str) -> None:
        setattr(self, f"layer{int(name[1]) - 1}", None)
        if name == "c4":
            self.norm = None

    def level_prefixes(self) -> dict[str, tuple[str, ...]]:
        return {"c2": ("conv1.", "bn1.", "layer1."), "c3": ("layer2.",), "c4": ("layer3.", "norm.")}

    def head_keys(self) -> tuple[str, ...]:
        return ("linear.", "fc.")

    def stage_blocks(self) -> dict[str, nn.Sequential]:
        layers = {f"c{i + 1}": getattr(self, f"layer{i}") for i in range(1, 4)}
        return {level: layer for level, layer in layers.items() if layer is not None}

    def stage_modules(self) -> list[list[nn.Module]]:
        stem = [m for m in (self.conv1, self.bn1) if m is not None]
        layers = [getattr(self, f"layer{i}") for i in range(1, 4)]
        mods = [[m] if m is not None else [] for m in layers]
        if self.norm is not None:
            mods[-1].append(self.norm)
        return [stem, *mods, []]  # no c5

    def conv_norm_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """Every convolution whose output goes only into a norm: the stem, conv1/conv2 of the
        basic blocks, conv1/conv2 of the bottlenecks (their conv3 feeds the sum)."""
        pairs = [] if self.bn1 is None else [(self.conv1, self.bn1)]
        for block in self.residual_blocks():
            if isinstance(block, CifarBasicBlock):
                pairs += [(block.conv1, block.bn1), (block.conv2, block.bn2)]
            else:
                pairs += [(block.conv1, block.bn2), (block.conv2, block.bn3)]
        return pairs

    def extra_repr(self) -> str:
        return super().extra_repr() + (", plain" if self.plain else "")


def _register(depth: int, preact: bool) -> None:
    name = f"cifar_preact_resnet{depth}" if preact else f"cifar_resnet{depth}"
    kind = "pre-activation bottleneck" if preact else "basic-block, option A shortcuts"
    doc = f"{name}: He et al.'s CIFAR ResNet ({kind}); plain=True removes shortcuts."
    register_backbone(name, family_builder(name, CifarResNet, depth, preact=preact, doc=doc))


for _depth in BASIC_DEPTHS:
    _register(_depth, preact=False)
for _depth in PREACT_DEPTHS:
    _register(_depth, preact=True)
