"""RetinaFace configs: one small dataclass per part (no torch import in this module).

The defaults are the PyTorch port's ResNet-50 model (biubug6/Pytorch_Retinaface ``cfg_re50``
and the thresholds of its ``detect.py`` / ``test_widerface.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from resvision.backbones import BackboneConfig

# What the PyTorch port feeds its network: BGR pixels minus these per-channel means, no scaling.
PORT_BGR_MEAN = (104.0, 117.0, 123.0)


@dataclass
class PriorConfig:
    """Square priors (anchors): per level, one prior of each ``min_sizes`` side (pixels) at every
    feature-map cell, centred on the cell (``(j + 0.5) * step``)."""

    min_sizes: tuple[tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))
    steps: tuple[int, ...] = (8, 16, 32)  # must be the strides of the levels the heads read
    variances: tuple[float, float] = (0.1, 0.2)  # centre and size scale of the box encoding


@dataclass
class MultiboxLossConfig:
    """The reference's multibox loss: IoU matching, hard-negative mining, smooth-L1 terms."""

    iou_threshold: float = 0.35  # a prior whose best face overlaps this much is positive
    min_best_prior_iou: float = 0.2  # a face is forced onto its best prior only above this
    negatives_per_positive: int = 3  # hard-negative mining ratio
    box_weight: float = 2.0  # the reference's loc_weight
    landmark_weight: float = 1.0
    smooth_l1_beta: float = 1.0


@dataclass
class RetinaFaceTestConfig:
    """Inference: test-time resize, score threshold, top-k before and after NMS."""

    target_size: int = 0  # shorter side at test time; 0 = the image's own size (the port's)
    max_size: int = 0  # cap on the longer side when target_size is set (the port: 1600 / 2150)
    score_threshold: float = 0.02  # strictly greater is kept, as the port's `scores > t`
    pre_nms_top_k: int = 5000
    nms_threshold: float = 0.4
    max_detections: int = 750  # the port's keep_top_k
    # py_cpu_nms measures boxes as pixel index ranges (width = x2 - x1 + 1): 1.0 reproduces it,
    # 0.0 is the continuous IoU of torchvision
    nms_pixel_offset: float = 1.0
    # true: images of different sizes in one padded batch; false: one pass per size, each
    # image's faces exactly as if it ran alone (the port runs one image at a time); null
    # (auto): padded on a GPU, one pass per size elsewhere (on a 2-core CPU the padded batch of
    # 16 mixed-size photos ran at half the speed of one pass per size: the padding is computed)
    pad_batches: bool | None = None


@dataclass
class RetinaFaceConfig(BackboneConfig):
    """Backbone options and RetinaFace options: FPN over ``levels``, an SSH context module per
    level, 1x1 class / box / landmark heads, priors, loss and inference settings.

    ``input_format`` says how pixels are prepared: ``"backbone"`` uses the backbone's own
    normalization (RGB, ImageNet statistics for ResNets); ``"bgr_mean"`` is the PyTorch port's
    convention (BGR minus 104/117/123, no scaling), which its weights need.
    """

    backbone: str = "resnet50"
    levels: tuple[str, ...] = ("c3", "c4", "c5")
    fpn_channels: int = 256
    leaky_slope: float | None = None  # None: the reference's rule, 0.1 if fpn_channels <= 64
    input_format: Literal["backbone", "bgr_mean"] = "backbone"
    priors: PriorConfig = field(default_factory=PriorConfig)
    loss: MultiboxLossConfig = field(default_factory=MultiboxLossConfig)
    test: RetinaFaceTestConfig = field(default_factory=RetinaFaceTestConfig)

    @property
    def negative_slope(self) -> float:
        """The leaky ReLU slope of the FPN and SSH blocks."""
        if self.leaky_slope is not None:
            return self.leaky_slope
        return 0.1 if self.fpn_channels <= 64 else 0.0
