"""Pre-activation ResNets (ResNet-v2) and BiT: timm's ``ResNetV2`` behind the contract.

He et al. 2016 ("Identity Mappings") move each block's norm and activation before its
convolutions, so the shortcut path is a pure identity from input to output; Kolesnikov et al.
2020 (Big Transfer, BiT) train the same design with GroupNorm and weight-standardised
convolutions on ImageNet-21k. The modules are timm's and keep timm's names at the top level
(``stem``, ``stages``, ``norm``), so timm's checkpoints, among them BiT's ``timm:goog_in21k``,
load without renaming.

Levels, as timm's ``feature_info`` declares them:

- ``c1``: the stem convolution's output at stride 2. A pre-activation stem has no norm: this is
  the raw convolution (the first block normalises it).
- ``c2``..``c4``: the outputs of the first three stages (strides 4, 8, 16): residual sums before
  any norm, as timm's ``features_only`` returns them.
- ``c5``: the last stage followed by the final norm and ReLU (``norm.*``, the pre-activation
  design's norm after the last block). It belongs to ``c5``: dropped with it when ``out_levels``
  stops earlier, and applied to what ``c5`` returns (what timm's classifier pools).

Norm policies: ``resnetv2_50/101/152`` use batch norm fused with its ReLU (timm's
``BatchNormAct2d``); ``frozen_bn`` and ``sync_bn`` convert it with timm's converters, which keep
the activation. Nothing is folded into convolutions (``frozen_bn`` folding needs a plain
``FrozenBatchNorm2d`` right after a convolution). The BiT models use GroupNorm: it has no batch
statistics, so ``frozen_bn``, ``eval_bn`` and ``sync_bn`` are refused; ``norm="bn"`` keeps the
GroupNorm layers as trained (freeze layers with ``frozen_stages``).
"""

from __future__ import annotations

from collections.abc import Sequence

import timm
import torch
from timm.layers import convert_sync_batchnorm, freeze_batch_norm_2d
from torch import nn

from .base import NORM_POLICIES, Backbone, FeatureSpec, Normalization
from .registry import family_builder, register_backbone
from .resnet import timm_trunk

RESNETV2_NAMES = (
    "resnetv2_50",
    "resnetv2_101",
    "resnetv2_152",
    "resnetv2_50x1_bit",
    "resnetv2_101x1_bit",
)


class ResNetV2(Backbone):
    """A pre-activation ResNet trunk with levels ``c1`` (stem conv, stride 2) and ``c2``..``c5``
    (``c5`` includes the final norm). Build with :func:`resvision.backbones.create_backbone`."""

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
        self.stem, self.stages, self.norm = net.stem, net.stages, net.norm
        self.group_norm = any(isinstance(m, nn.GroupNorm) for m in self.modules())
        channels = [info["num_chs"] for info in net.feature_info]
        strides = [min(info["reduction"], output_stride) for info in net.feature_info]
        specs = [FeatureSpec(f"c{i + 1}", c, s) for i, (c, s) in enumerate(zip(channels, strides))]
        cfg = timm.models.get_pretrained_cfg(arch)
        self._init_contract(specs, out_levels, Normalization(tuple(cfg.mean), tuple(cfg.std)))

    @property
    def first_conv(self) -> str:
        return "stem.conv.weight"

    def _stage(self, level: str) -> nn.Module | None:
        return getattr(self.stages, str(int(level[1]) - 2), None)

    def _forward_level(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if name == "c1":
            return self.stem.conv(x)
        if name == "c2":
            for i, module in enumerate(self.stem):
                if i:  # the stem's padding and pooling after its convolution
                    x = module(x)
        x = self._stage(name)(x)
        return self.norm(x) if name == "c5" else x

    def _drop_level(self, name: str) -> None:
        delattr(self.stages, str(int(name[1]) - 2))  # the others keep their names (keys)
        if name == "c5":
            self.norm = None

    def head_keys(self) -> tuple[str, ...]:
        return ("head.",)

    def level_prefixes(self) -> dict[str, tuple[str, ...]]:
        stages = {f"c{i}": (f"stages.{i - 2}.",) for i in range(2, 5)}
        return {"c1": ("stem.",), **stages, "c5": ("stages.3.", "norm.")}

    def stage_blocks(self) -> dict[str, nn.Sequential]:
        levels = (f"c{i}" for i in range(2, 6))
        return {lv: self._stage(lv).blocks for lv in levels if self._stage(lv) is not None}

    def stage_modules(self) -> list[list[nn.Module]]:
        stages = [[s] if (s := self._stage(f"c{i}")) is not None else [] for i in range(2, 6)]
        if self.norm is not None:
            stages[-1].append(self.norm)
        return [[self.stem], *stages]

    def set_norm(self, policy: str) -> Backbone:
        """``bn`` and ``eval_bn`` as for every family; ``frozen_bn``/``sync_bn`` through timm's
        converters (they keep the norm's fused ReLU); GroupNorm models accept only ``bn``."""
        if policy not in NORM_POLICIES:
            raise ValueError(f"norm={policy!r} is not one of {NORM_POLICIES}")
        if self.group_norm and policy != "bn":
            raise ValueError(
                f"norm={policy!r} does not apply to {self.arch}: it uses GroupNorm (BiT), which "
                "has no batch statistics to freeze, fix or synchronise. Use norm='bn' (keeps the "
                "GroupNorm layers as trained) and frozen_stages to freeze layers"
            )
        if policy not in ("frozen_bn", "sync_bn"):
            return super().set_norm(policy)
        if self.norm_policy != "bn":
            raise ValueError(
                f"norm policy already set to {self.norm_policy!r}; create a new backbone"
            )
        convert = freeze_batch_norm_2d if policy == "frozen_bn" else convert_sync_batchnorm
        for name, child in list(self.named_children()):
            setattr(self, name, convert(child))
        self.norm_policy = policy
        return self.train(self.training)


for _arch in RESNETV2_NAMES:
    register_backbone(
        _arch,
        family_builder(
            _arch,
            ResNetV2,
            _arch,
            doc=f"{_arch} (timm's pre-activation ResNetV2) behind the resvision contract.",
        ),
    )
