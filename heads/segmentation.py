"""Semantic-segmentation heads: U-Net, DeepLabV3, DeepLabV3+ and FPN decoders on any backbone.

The decoders are segmentation-models-pytorch's, fed from the backbone's declared levels (sized
from ``feature_specs``, never a hand-typed channel list). DeepLab variants take the output
stride (8 or 16) from the specs; U-Net uses every level, the stride-2 ``c1`` included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

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

from resvision.backbones import Backbone, BackboneConfig, FeatureSpec

ARCHS = ("unet", "deeplabv3", "deeplabv3plus", "fpn")


@dataclass
class SegHeadConfig:
    """Decoder, head and auxiliary head of a segmentation model."""

    arch: Literal["unet", "deeplabv3", "deeplabv3plus", "fpn"] = "deeplabv3plus"
    num_classes: int = 21
    decoder_channels: int = 256  # ASPP (DeepLab) / pyramid (FPN) channels
    unet_channels: tuple[int, ...] = (256, 128, 64, 32, 16)  # U-Net blocks, deepest first
    atrous_rates: tuple[int, int, int] = (12, 24, 36)
    aspp_separable: bool = False
    aspp_dropout: float = 0.1
    head_kernel: int = 1  # kernel of the final classifier conv (smp's U-Net uses 3)
    aux_weight: float = 0.0  # > 0 adds an FCN head on the second-to-last level (c4)
    aux_channels: int = 256
    align_corners: bool = False  # of the final bilinear upsampling (smp's DeepLab: True)
    dilation: Literal["contract", "uniform"] = "contract"  # "uniform" = smp's dilated encoders


def required_levels(family: tuple[FeatureSpec, ...], cfg: SegHeadConfig) -> tuple[str, ...]:
    """The backbone levels an architecture reads, high resolution first."""
    names = [s.name for s in family]
    if cfg.arch == "unet":
        levels = set(names)
    elif cfg.arch == "fpn":
        levels = set(names[-4:])
    elif cfg.arch == "deeplabv3":
        levels = {names[-1]}
    else:
        stride4 = [s.name for s in family if s.stride == 4]
        if not stride4:
            raise ValueError(f"DeepLabV3+ needs a stride-4 level; this backbone has {names}")
        levels = {stride4[0], names[-1]}
    if cfg.aux_weight > 0:
        levels.add(names[-2])
    return tuple(n for n in names if n in levels)


class SegmentationModel(nn.Module):
    """``backbone -> decoder -> classifier -> logits at the input size``.

    ``forward(images)`` takes ``images: (N, 3, H, W)`` in ``[0, 255]`` (uint8 or float; the
    backbone's normalization is applied inside) of any size: inputs are padded to the multiple
    the decoder needs and the logits cropped back. Returns ``{"out": (N, K, H, W)}`` plus
    ``"aux"`` when the auxiliary head is on. With a ``criterion`` and ``targets`` in training
    mode it returns the criterion's named losses instead (``loss_aux_*`` for the auxiliary head).
    """

    def __init__(
        self,
        backbone: Backbone,
        cfg: SegHeadConfig,
        criterion: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]] | None = None,
    ) -> None:
        super().__init__()
        if cfg.arch not in ARCHS:
            raise ValueError(f"arch={cfg.arch!r}: choose one of {ARCHS}")
        self.cfg = cfg
        self.backbone = backbone
        self.criterion = criterion
        if cfg.dilation == "uniform":
            backbone.use_uniform_dilation()
        specs = backbone.feature_specs
        family = [s.name for s in backbone.family_specs]
        self.aux_level = family[-2] if cfg.aux_weight > 0 else None
        main = [s for s in specs if s.name != self.aux_level or cfg.arch in ("unet", "fpn")]
        self.levels = tuple(s.name for s in main)
        in_ch = backbone.state_dict()[backbone.first_conv].shape[1]
        last = main[-1]
        if cfg.arch in ("deeplabv3", "deeplabv3plus") and last.stride not in (8, 16):
            raise ValueError(
                f"{cfg.arch} needs output stride 8 or 16, the backbone's last level has stride "
                f"{last.stride}: set model.output_stride to 8 or 16"
            )
        self.pad_to = 1
        if cfg.arch == "unet":
            n = len(main)
            if len(cfg.unet_channels) < n:
                raise ValueError(f"unet_channels needs {n} values for levels {self.levels}")
            self.decoder = UnetDecoder(
                encoder_channels=[in_ch] + [s.channels for s in main],
                decoder_channels=list(cfg.unet_channels[:n]),
                n_blocks=n,
            )
            head_in = cfg.unet_channels[n - 1]
        elif cfg.arch == "deeplabv3":
            self.decoder = DeepLabV3Decoder(
                in_channels=last.channels,
                out_channels=cfg.decoder_channels,
                atrous_rates=cfg.atrous_rates,
                aspp_separable=cfg.aspp_separable,
                aspp_dropout=cfg.aspp_dropout,
            )
            head_in = cfg.decoder_channels
        elif cfg.arch == "deeplabv3plus":
            high = main[0]  # the stride-4 level (see required_levels)
            self.decoder = DeepLabV3PlusDecoder(
                encoder_channels=[in_ch, 0, high.channels, last.channels],
                encoder_depth=5,
                out_channels=cfg.decoder_channels,
                atrous_rates=cfg.atrous_rates,
                output_stride=last.stride,
                aspp_separable=cfg.aspp_separable,
                aspp_dropout=cfg.aspp_dropout,
            )
            head_in = cfg.decoder_channels
            self.pad_to = last.stride  # its fixed x4/x2 upsampling must meet the stride-4 map
        else:
            four = main[-4:]
            self.decoder = FPNDecoder(
                encoder_channels=[in_ch] + [s.channels for s in four],
                encoder_depth=4,
                pyramid_channels=cfg.decoder_channels,
                segmentation_channels=cfg.decoder_channels // 2,
                dropout=0.2,
            )
            head_in = self.decoder.out_channels
            self.pad_to = four[-1].stride
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

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    def _decode(self, x: torch.Tensor, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        levels = [feats[n] for n in self.levels]
        if self.cfg.arch == "unet":
            return self.decoder([x, *levels])
        if self.cfg.arch == "deeplabv3":
            return self.decoder([levels[-1]])
        if self.cfg.arch == "deeplabv3plus":
            return self.decoder([x, None, levels[0], levels[-1]])
        return self.decoder([x, *levels[-4:]])

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
        out = {"out": self._resize(self.segmentation_head(self._decode(x, feats)), size, (h, w))}
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


def build_segmentation_model(
    backbone_cfg: BackboneConfig,
    head_cfg: SegHeadConfig,
    criterion: Callable | None = None,
    *,
    backbone_weights=None,
) -> SegmentationModel:
    """Create the backbone with exactly the levels ``head_cfg`` reads, then the model."""
    with torch.device("meta"):
        family = backbone_cfg.create_backbone(None).family_specs
    levels = required_levels(family, head_cfg)
    backbone = backbone_cfg.create_backbone(levels, weights=backbone_weights)
    return SegmentationModel(backbone, head_cfg, criterion)
