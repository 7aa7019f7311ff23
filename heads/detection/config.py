"""Faster R-CNN / Mask R-CNN configs: one small dataclass per part (no torch import).

The defaults are torchvision's ``fasterrcnn_resnet50_fpn`` (and, with ``mask.enabled``, its
``maskrcnn_resnet50_fpn``); detectron2's and torchvision v2's recipes are presets of the
detection task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from resvision.backbones import BackboneConfig


@dataclass
class AnchorConfig:
    """Anchors: one size per pyramid level P2..P6, every aspect ratio at each."""

    sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)


@dataclass
class RPNConfig:
    """Region proposal network: head depth, proposal filtering, training targets."""

    conv_depth: int = 1  # 2 in torchvision v2
    pre_nms_top_n_train: int = 2000  # per level
    pre_nms_top_n_test: int = 1000
    post_nms_top_n_train: int = 2000  # per image (detectron2: 1000)
    post_nms_top_n_test: int = 1000
    nms_thresh: float = 0.7
    fg_iou_thresh: float = 0.7
    bg_iou_thresh: float = 0.3
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5


@dataclass
class RoIHeadsConfig:
    """Box head: RoIAlign, training targets and the detections it returns."""

    output_size: int = 7
    sampling_ratio: int = 2  # 0 = adaptive (detectron2's ROIAlignV2)
    aligned: bool = False  # half-pixel correction (detectron2: true)
    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.5
    batch_size_per_image: int = 512
    positive_fraction: float = 0.25
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 100
    class_agnostic_nms: bool = False
    batched_nms_candidates: int = 4096  # per image, before the final batched NMS


@dataclass
class BoxLossConfig:
    """The box regression loss of the RPN and the box head."""

    kind: Literal["smooth_l1", "l1"] = "smooth_l1"
    beta: float = 1 / 9  # smooth-L1's beta (0 = L1)


@dataclass
class MaskHeadConfig:
    """The mask branch of Mask R-CNN (off: boxes only). RoIAlign over the same levels as the box
    head (with its ``sampling_ratio`` and ``aligned``), ``len(conv_channels)`` 3x3 convolutions,
    a 2x deconvolution and one mask logit map per class: masks of ``2 * output_size`` pixels."""

    enabled: bool = False
    output_size: int = 14
    conv_channels: tuple[int, ...] = (256, 256, 256, 256)
    dilation: int = 1
    predictor_channels: int = 256  # the deconvolution's output channels


@dataclass
class TestSizeConfig:
    """Inference resize: the shorter side, capped by the longer side (torchvision's rule)."""

    min_size: int = 800
    max_size: int = 1333


@dataclass
class FasterRCNNConfig(BackboneConfig):
    """Backbone options and Faster R-CNN + FPN options (torchvision's defaults)."""

    num_classes: int = 80  # object classes; the classifier has num_classes + 1 outputs
    fpn_channels: int = 256
    head_norm: bool = False  # BN in the FPN, a 4-conv + 1-fc box head, the mask head (v2)
    nms_impl: Literal["auto", "torchvision", "batched"] = "auto"  # auto: batched on GPU
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi_heads: RoIHeadsConfig = field(default_factory=RoIHeadsConfig)
    box_loss: BoxLossConfig = field(default_factory=BoxLossConfig)
    mask: MaskHeadConfig = field(default_factory=MaskHeadConfig)
    test: TestSizeConfig = field(default_factory=TestSizeConfig)


# Flat keys of configs written before the parts had their own sections -> their new place.
LEGACY_KEYS = {
    "anchor_sizes": "anchors.sizes",
    "aspect_ratios": "anchors.aspect_ratios",
    **{
        f"rpn_{k}": f"rpn.{k}"
        for k in (
            "conv_depth",
            "pre_nms_top_n_train",
            "pre_nms_top_n_test",
            "post_nms_top_n_train",
            "post_nms_top_n_test",
            "nms_thresh",
            "fg_iou_thresh",
            "bg_iou_thresh",
            "batch_size_per_image",
            "positive_fraction",
        )
    },
    "roi_output_size": "roi_heads.output_size",
    "roi_sampling_ratio": "roi_heads.sampling_ratio",
    "roi_aligned": "roi_heads.aligned",
    **{
        f"box_{k}": f"roi_heads.{k}"
        for k in ("fg_iou_thresh", "bg_iou_thresh", "batch_size_per_image", "positive_fraction")
    },
    "score_thresh": "roi_heads.score_thresh",
    "nms_thresh": "roi_heads.nms_thresh",
    "detections_per_img": "roi_heads.detections_per_img",
    "class_agnostic_nms": "roi_heads.class_agnostic_nms",
    "batched_nms_candidates": "roi_heads.batched_nms_candidates",
    "box_loss": "box_loss.kind",
    "smooth_l1_beta": "box_loss.beta",
    "test_min_size": "test.min_size",
    "test_max_size": "test.max_size",
}
