"""Faster R-CNN (and Mask R-CNN) with an FPN neck on any backbone, from torchvision's detection
components.

torchvision provides the anchor generator, RPN head and target assignment, RoI heads sampling,
box coder, TwoMLPHead / FastRCNNConvFCHead, FastRCNNPredictor and FeaturePyramidNetwork; they
are composed here behind the feature contract (sized from ``feature_specs``), with:

- a configurable box loss (smooth-L1 with beta, or L1) for the RPN and the box head;
- RoIAlign with ``aligned`` (half-pixel correction) and scales taken from the declared strides;
- inference as batched tensor operations: proposal filtering and detection post-processing run
  for all images at once (NMS over (image, level) / image groups, see ``heads.nms``), which also
  exports to ONNX with a dynamic batch dimension;
- head outputs decoded in fp32 under autocast (bf16 box coordinates would be 8 px coarse);
- with ``cfg.mask.enabled``, Mask R-CNN's mask branch (torchvision's MaskRCNNHeads and
  MaskRCNNPredictor, see :mod:`.masks`): a mask loss in training, mask probabilities pasted
  into each image at inference.

Module names match torchvision's ``FasterRCNN`` / ``MaskRCNN`` (``backbone.body``,
``backbone.fpn``, ``rpn``, ``roi_heads``, ``roi_heads.mask_head``, ...), so its
``fasterrcnn_resnet50_fpn`` / ``maskrcnn_resnet50_fpn`` (and ``_v2``) state_dicts load unchanged.
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import (
    FastRCNNConvFCHead,
    FastRCNNPredictor,
    TwoMLPHead,
)
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

from resvision.backbones import Backbone, FeatureSpec

from ..fpn import FPN
from .box_ops import sizes_tensor
from .config import FasterRCNNConfig
from .masks import paste_masks
from .poolers import MultiScaleRoIAlign
from .roi_heads import BoxHeads
from .rpn import RPN


class FasterRCNN(nn.Module):
    """Faster R-CNN + FPN on a registry backbone; Mask R-CNN with ``cfg.mask.enabled``.

    ``forward(images, targets=None)``: ``images`` is a list of ``(3, H, W)`` tensors (uint8 or
    float in [0, 255]) or an ``(N, 3, H, W)`` tensor. In training mode (with targets: dicts with
    ``boxes`` (K, 4) xyxy in pixels, ``labels`` (K,) in 1..num_classes and, for Mask R-CNN,
    ``masks`` (K, H, W) uint8) it returns the four losses (five with ``loss_mask``); images are
    used at their size (the data pipeline resizes). In eval mode images are resized to
    ``cfg.test.min_size``/``max_size`` as torchvision does and the result is a list of dicts
    with ``boxes`` (in the original image's coordinates), ``scores``, ``labels`` and, for Mask
    R-CNN, ``masks`` (K, H, W) float probabilities at the image's size (torchvision's before
    thresholding, without its singleton channel).
    """

    def __init__(self, backbone: Backbone, cfg: FasterRCNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        norm = backbone.normalization
        self.normalization = norm
        self.backbone = FPN(backbone, cfg.fpn_channels, nn.BatchNorm2d if cfg.head_norm else None)
        self.rpn = self.build_rpn(cfg, self.backbone.out_specs)
        self.roi_heads = self.build_roi_heads(cfg, self.backbone.out_specs)
        self.transform = GeneralizedRCNNTransform(
            cfg.test.min_size,
            cfg.test.max_size,
            list(norm.mean),
            list(norm.std),
            size_divisible=backbone.size_divisibility,
        )

    # -- the parts (a subclass such as a Mask R-CNN overrides or extends these) -------------
    def build_rpn(self, cfg: FasterRCNNConfig, specs: tuple[FeatureSpec, ...]) -> RPN:
        sizes = cfg.anchors.sizes
        if len(sizes) != len(specs):
            raise ValueError(
                f"model.anchors.sizes needs one size per pyramid level ({len(specs)}: "
                f"{[s.name for s in specs]}), got {sizes}"
            )
        anchors = AnchorGenerator(
            tuple((s,) for s in sizes), (tuple(cfg.anchors.aspect_ratios),) * len(specs)
        )
        head = RPNHead(
            cfg.fpn_channels, anchors.num_anchors_per_location()[0], conv_depth=cfg.rpn.conv_depth
        )
        return RPN(cfg.rpn, cfg.box_loss, anchors, head)

    def build_roi_heads(self, cfg: FasterRCNNConfig, specs: tuple[FeatureSpec, ...]) -> BoxHeads:
        rc = cfg.roi_heads
        pooler = MultiScaleRoIAlign(
            [s.name for s in specs[:4]],
            [s.stride for s in specs[:4]],
            rc.output_size,
            rc.sampling_ratio,
            rc.aligned,
        )
        c, r = cfg.fpn_channels, rc.output_size
        if cfg.head_norm:
            box_head = FastRCNNConvFCHead(
                (c, r, r), [256, 256, 256, 256], [1024], norm_layer=nn.BatchNorm2d
            )
        else:
            box_head = TwoMLPHead(c * r * r, 1024)
        predictor = FastRCNNPredictor(1024, cfg.num_classes + 1)
        if not cfg.mask.enabled:
            return BoxHeads(rc, cfg.box_loss, pooler, box_head, predictor)
        mc = cfg.mask
        mask_pooler = MultiScaleRoIAlign(
            pooler.featmap_names, pooler.strides, mc.output_size, rc.sampling_ratio, rc.aligned
        )
        mask_head = MaskRCNNHeads(
            c,
            list(mc.conv_channels),
            mc.dilation,
            norm_layer=nn.BatchNorm2d if cfg.head_norm else None,
        )
        mask_predictor = MaskRCNNPredictor(
            mc.conv_channels[-1], mc.predictor_channels, cfg.num_classes + 1
        )
        return BoxHeads(
            rc, cfg.box_loss, pooler, box_head, predictor, mask_pooler, mask_head, mask_predictor
        )

    @property
    def nms_impl(self) -> str:
        if self.cfg.nms_impl != "auto":
            return self.cfg.nms_impl
        return "batched" if next(self.parameters()).is_cuda else "torchvision"

    def _to_unit(self, images) -> list[Tensor]:
        """Images as float in [0, 1] (what torchvision's transform expects)."""
        scale = self.normalization.max_pixel_value
        return [img.float() / scale for img in images]

    def _batch(self, images: list[Tensor], resize: bool) -> ImageList:
        out = []
        for img in images:
            # torchvision's transform.normalize, with the constants made once per device
            mean, std = self.normalization.constants(img)
            img = (img - mean) / std
            if resize:
                img, _ = self.transform.resize(img, None)
            out.append(img)
        sizes = [tuple(i.shape[-2:]) for i in out]
        return ImageList(
            self.transform.batch_images(out, size_divisible=self.transform.size_divisible), sizes
        )

    def forward(self, images, targets: list[dict[str, Tensor]] | None = None):
        if self.training:
            if targets is None:
                raise ValueError("training needs targets (boxes and labels per image)")
            batch = self._batch(self._to_unit(images), resize=False)
            features = self.backbone(batch.tensors)
            sizes = sizes_tensor(batch.image_sizes, batch.tensors.device)
            proposals, _, valid, raw = self.rpn.propose(
                list(features.values()), tuple(batch.tensors.shape[-2:]), sizes, self.nms_impl
            )
            losses = self.rpn.losses(raw, targets)
            return losses | self.roi_heads.losses(features, proposals, valid, targets)
        originals = [tuple(img.shape[-2:]) for img in images]
        batch = self._batch(self._to_unit(images), resize=True)
        found = self.detect(batch.tensors, sizes_tensor(batch.image_sizes, batch.tensors.device))
        results = []
        for i, (resized, original) in enumerate(zip(batch.image_sizes, originals)):
            keep = found["valid"][i]
            boxes = resize_boxes(found["boxes"][i][keep], list(resized), list(original))
            result = {
                "boxes": boxes,
                "scores": found["scores"][i][keep],
                "labels": found["labels"][i][keep],
            }
            if "masks" in found:
                result["masks"] = paste_masks(found["masks"][i][keep], boxes, *original)
            results.append(result)
        return results

    def detect(self, tensors: Tensor, image_sizes: Tensor) -> dict[str, Tensor]:
        """Batched inference on normalized, padded ``tensors (N, 3, H, W)`` with per-image
        ``image_sizes (N, 2)``: padded ``boxes (N, D, 4)`` in the input's pixels, ``scores``,
        ``labels`` (N, D), ``valid`` (N, D) and, for Mask R-CNN, ``masks (N, D, M, M)``
        probabilities in each box's frame (:func:`.masks.paste_masks` puts them in the image).
        """
        features = self.backbone(tensors)
        proposals, _, pvalid, _ = self.rpn.propose(
            list(features.values()), tuple(tensors.shape[-2:]), image_sizes, self.nms_impl
        )
        boxes, scores, labels, valid = self.roi_heads.detect(
            features, proposals, pvalid, image_sizes, self.nms_impl
        )
        found = {"boxes": boxes, "scores": scores, "labels": labels, "valid": valid}
        if self.roi_heads.has_mask():
            found["masks"] = self.roi_heads.predict_masks(features, boxes, labels)
        return found
