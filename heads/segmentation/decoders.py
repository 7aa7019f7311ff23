"""Semantic-segmentation models: U-Net, DeepLabV3, DeepLabV3+ and FPN decoders on any backbone.

The decoders are segmentation-models-pytorch's, fed from the backbone's declared levels (sized
from ``feature_specs``, never a hand-typed channel list). One class per architecture on a shared
base, as smp does: the base normalizes, pads to the multiple the decoder needs, runs the
backbone, the classifier and the optional auxiliary head, crops back and computes the losses;
an architecture says which levels it reads, builds its decoder and decodes. DeepLab variants
take the output stride (8 or 16) from the specs; U-Net uses every level, the stride-2 ``c1``
included.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.base.heads import SegmentationHead
from segmentation_models_pytorch.base.initialization import initialize_decoder, initialize_head
from segmentation_models_pytorch.decoders.deeplabv3.decoder import (
    DeepLabV3Decoder,
    DeepLabV3PlusDecoder,
)
from segmentation_models_pytorch.decoders.fpn.decoder import FPNDecoder
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from torch import nn

from resvision.backbones import Backbone, FeatureSpec

from .config import SegHeadConfig, SegModelConfig

Criterion = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


class SegmentationModel(nn.Module):
    """``backbone -> decoder -> classifier -> logits at the input size`` (the shared base).

    ``forward(images)`` takes ``images: (N, 3, H, W)`` in ``[0, 255]`` (uint8 or float; the
    backbone's normalization is applied inside) of any size: inputs are padded to the multiple
    the decoder needs and the logits cropped back. Returns ``{"out": (N, K, H, W)}`` plus
    ``"aux"`` when the auxiliary head is on. With a ``criterion`` and ``targets`` in training
    mode it returns the criterion's named losses instead (``loss_aux_*`` for the auxiliary head).

    Subclasses set :meth:`main_levels`, build ``self.decoder`` in :meth:`build_decoder`
    (returning the classifier's input channels and the pad multiple) and :meth:`decode`.
    """

    arch: ClassVar[str] = ""

    def __init__(self, backbone: Backbone, cfg: SegHeadConfig, criterion: Criterion | None = None):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.criterion = criterion
        if cfg.dilation == "uniform":
            backbone.use_uniform_dilation()
        family = [s.name for s in backbone.family_specs]
        self.aux_level = family[-2] if cfg.aux_weight > 0 else None
        wanted = self.main_levels(backbone.family_specs)
        main = [s for s in backbone.feature_specs if s.name in wanted]
        self.levels = tuple(s.name for s in main)
        head_in, self.pad_to = self.build_decoder(main, backbone.in_channels, cfg)
        self.segmentation_head = SegmentationHead(
            head_in, cfg.num_classes, kernel_size=cfg.head_kernel
        )
        initialize_decoder(self.decoder)
        initialize_head(self.segmentation_head)
        self.aux_head = None
        if self.aux_level is not None:
            aux_in = next(s.channels for s in backbone.family_specs if s.name == self.aux_level)
            # torchvision's FCNHead layout: conv3x3-BN-ReLU-dropout-conv1x1
            self.aux_head = nn.Sequential(
                nn.Conv2d(aux_in, cfg.aux_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(cfg.aux_channels),
                nn.ReLU(),
                nn.Dropout(0.1),
                nn.Conv2d(cfg.aux_channels, cfg.num_classes, 1),
            )

    # -- what an architecture defines -----------------------------------------------------------
    @classmethod
    def main_levels(cls, family: Sequence[FeatureSpec]) -> tuple[str, ...]:
        """The backbone levels the decoder reads, high resolution first."""
        raise NotImplementedError

    def build_decoder(
        self, levels: list[FeatureSpec], in_channels: int, cfg: SegHeadConfig
    ) -> tuple[int, int]:
        """Set ``self.decoder``; return the classifier's input channels and the pad multiple."""
        raise NotImplementedError

    def decode(self, x: torch.Tensor, levels: list[torch.Tensor]) -> torch.Tensor:
        """Decoder features from the padded input ``x`` and the main levels' features."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    @classmethod
    def required_levels(cls, family: Sequence[FeatureSpec], cfg: SegHeadConfig) -> tuple[str, ...]:
        """Every level the model reads (the main levels and the auxiliary head's)."""
        levels = set(cls.main_levels(family))
        if cfg.aux_weight > 0:
            levels.add(family[-2].name)
        return tuple(s.name for s in family if s.name in levels)

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    def _resize(
        self, logits: torch.Tensor, size: tuple[int, int], crop: tuple[int, int]
    ) -> torch.Tensor:
        if tuple(logits.shape[-2:]) != tuple(size):
            logits = F.interpolate(
                logits, size=size, mode="bilinear", align_corners=self.cfg.align_corners
            )
        return logits[..., : crop[0], : crop[1]]

    def forward(
        self, images: torch.Tensor, targets: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        x = self.backbone.normalization.normalize(images.float())
        h, w = x.shape[-2:]
        if self.pad_to > 1:  # unconditional (a zero pad is free) so that ONNX traces it
            x = F.pad(x, (0, (-w) % self.pad_to, 0, (-h) % self.pad_to))
        feats = self.backbone(x)
        size = tuple(x.shape[-2:])
        decoded = self.decode(x, [feats[n] for n in self.levels])
        out = {"out": self._resize(self.segmentation_head(decoded), size, (h, w))}
        if self.aux_head is not None:
            out["aux"] = self._resize(self.aux_head(feats[self.aux_level]), size, (h, w))
        if self.training and targets is not None and self.criterion is not None:
            losses = dict(self.criterion(out["out"], targets))
            if "aux" in out:
                aux = self.criterion(out["aux"], targets)
                losses |= {
                    k.replace("loss_", "loss_aux_"): self.cfg.aux_weight * v for k, v in aux.items()
                }
            return losses
        return out


class UNet(SegmentationModel):
    """U-Net (smp's decoder) over every level, the stride-2 stem included."""

    arch = "unet"

    @classmethod
    def main_levels(cls, family):
        return tuple(s.name for s in family)

    def build_decoder(self, levels, in_channels, cfg):
        n = len(levels)
        if len(cfg.unet_channels) < n:
            raise ValueError(f"unet_channels needs {n} values for levels {self.levels}")
        self.decoder = UnetDecoder(
            encoder_channels=[in_channels] + [s.channels for s in levels],
            decoder_channels=list(cfg.unet_channels[:n]),
            n_blocks=n,
        )
        return cfg.unet_channels[n - 1], 1

    def decode(self, x, levels):
        return self.decoder([x, *levels])


def _check_deeplab_stride(arch: str, last: FeatureSpec) -> None:
    if last.stride not in (8, 16):
        raise ValueError(
            f"{arch} needs output stride 8 or 16, the backbone's last level has stride "
            f"{last.stride}: set model.output_stride to 8 or 16"
        )


class DeepLabV3(SegmentationModel):
    """DeepLabV3: ASPP on the last level (output stride 8 or 16)."""

    arch = "deeplabv3"

    @classmethod
    def main_levels(cls, family):
        return (family[-1].name,)

    def build_decoder(self, levels, in_channels, cfg):
        _check_deeplab_stride(self.arch, levels[-1])
        self.decoder = DeepLabV3Decoder(
            in_channels=levels[-1].channels,
            out_channels=cfg.decoder_channels,
            atrous_rates=cfg.atrous_rates,
            aspp_separable=cfg.aspp_separable,
            aspp_dropout=cfg.aspp_dropout,
        )
        return cfg.decoder_channels, 1

    def decode(self, x, levels):
        return self.decoder([levels[-1]])


class DeepLabV3Plus(SegmentationModel):
    """DeepLabV3+: ASPP on the last level and a skip from the stride-4 level."""

    arch = "deeplabv3plus"

    @classmethod
    def main_levels(cls, family):
        stride4 = [s.name for s in family if s.stride == 4]
        if not stride4:
            names = [s.name for s in family]
            raise ValueError(f"DeepLabV3+ needs a stride-4 level; this backbone has {names}")
        return (stride4[0], family[-1].name)

    def build_decoder(self, levels, in_channels, cfg):
        high, last = levels[0], levels[-1]
        _check_deeplab_stride(self.arch, last)
        self.decoder = DeepLabV3PlusDecoder(
            encoder_channels=[in_channels, 0, high.channels, last.channels],
            encoder_depth=5,
            out_channels=cfg.decoder_channels,
            atrous_rates=cfg.atrous_rates,
            output_stride=last.stride,
            aspp_separable=cfg.aspp_separable,
            aspp_dropout=cfg.aspp_dropout,
        )
        # its fixed x4/x2 upsampling must meet the stride-4 map
        return cfg.decoder_channels, last.stride

    def decode(self, x, levels):
        return self.decoder([x, None, levels[0], levels[-1]])


class SemanticFPN(SegmentationModel):
    """The FPN semantic-segmentation decoder (smp's ``FPN``) on the last four levels."""

    arch = "fpn"

    @classmethod
    def main_levels(cls, family):
        return tuple(s.name for s in family[-4:])

    def build_decoder(self, levels, in_channels, cfg):
        four = levels[-4:]
        self.decoder = FPNDecoder(
            encoder_channels=[in_channels] + [s.channels for s in four],
            encoder_depth=4,
            pyramid_channels=cfg.decoder_channels,
            segmentation_channels=cfg.decoder_channels // 2,
            dropout=0.2,
        )
        return self.decoder.out_channels, four[-1].stride

    def decode(self, x, levels):
        return self.decoder([x, *levels[-4:]])


ARCHITECTURES: dict[str, type[SegmentationModel]] = {
    cls.arch: cls for cls in (UNet, DeepLabV3, DeepLabV3Plus, SemanticFPN)
}


def build_segmentation_model(
    cfg: SegModelConfig, criterion: Criterion | None = None, *, backbone_weights=None
) -> SegmentationModel:
    """The backbone with exactly the levels the architecture reads, then the model."""
    if cfg.arch not in ARCHITECTURES:
        raise ValueError(f"arch={cfg.arch!r}: choose one of {tuple(ARCHITECTURES)}")
    cls = ARCHITECTURES[cfg.arch]
    with torch.device("meta"):
        family = cfg.create_backbone(None).family_specs
    backbone = cfg.create_backbone(cls.required_levels(family, cfg), weights=backbone_weights)
    return cls(backbone, cfg, criterion)
