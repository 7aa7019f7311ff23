"""Segmentation model configs: the decoder and head options, and the whole model's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from resvision.backbones import BackboneConfig


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


@dataclass
class SegModelConfig(BackboneConfig, SegHeadConfig):
    """Backbone options (``backbone``, ``weights``, ``output_stride``, ...) and head options:
    the ``model`` section of the segmentation task's config too (the one class of that name).

    ``weights`` takes backbone weights (a path or tag) or, through the task's ``build_model``, a
    whole model: a resvision segmentation checkpoint, a segmentation-models-pytorch state_dict
    or torchvision's ``deeplabv3_resnet50`` state_dict (the layout is detected).
    ``num_classes=0`` takes the number of classes from the data (the task resolves it).
    """
