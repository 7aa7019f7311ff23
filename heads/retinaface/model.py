"""RetinaFace (Deng et al. 2019) on any registry backbone, as the PyTorch port builds it.

- an FPN over the backbone's ``levels`` (c3..c5 by default): 1x1 lateral and 3x3 merge blocks
  (conv, batch norm, leaky ReLU), nearest-neighbour top-down path, sized from the backbone's
  ``feature_specs``;
- an SSH context module per level (3x3, 5x5 and 7x7 receptive fields from stacked 3x3 convs);
- 1x1 class (2 logits), box (4) and landmark (10) heads per level with one output per prior.

Training returns the multibox losses (:mod:`.loss`); inference decodes, thresholds, keeps the
top-k, suppresses with batched NMS (:mod:`resvision.heads.nms`) and keeps the best
``max_detections``, for the whole batch on the device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resvision.backbones import Backbone, FeatureSpec, Normalization

from ..detection.box_ops import sizes_tensor
from ..nms import group_nms
from .box_coder import decode_boxes, decode_landmarks, make_priors
from .config import PORT_BGR_MEAN, RetinaFaceConfig, RetinaFaceTestConfig
from .loss import multibox_loss

PORT_NORMALIZATION = Normalization(PORT_BGR_MEAN, (1.0, 1.0, 1.0), "BGR", 1.0)
PRIOR_CACHE_SIZE = 8  # sets of priors kept per model (photos of many sizes would grow it)


def conv_bn(in_channels: int, out_channels: int, kernel: int, slope: float | None) -> nn.Sequential:
    """Convolution (no bias), batch norm and, unless ``slope`` is None, a leaky ReLU."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, 1, kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if slope is not None:
        layers.append(nn.LeakyReLU(slope, inplace=True) if slope else nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class RetinaFaceFPN(nn.Module):
    """Lateral 1x1 blocks on every level, top-down nearest upsampling, 3x3 merge blocks on all
    but the coarsest level; every output has ``out_channels`` channels."""

    def __init__(self, in_channels: Sequence[int], out_channels: int, slope: float) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(conv_bn(c, out_channels, 1, slope) for c in in_channels)
        self.merge = nn.ModuleList(
            conv_bn(out_channels, out_channels, 3, slope) for _ in in_channels[:-1]
        )

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        outs = [lateral(f) for lateral, f in zip(self.lateral, features)]
        for k in range(len(outs) - 2, -1, -1):
            up = F.interpolate(outs[k + 1], size=outs[k].shape[-2:], mode="nearest")
            outs[k] = self.merge[k](outs[k] + up)
        return outs


class SSH(nn.Module):
    """The SSH context module: half the channels from a 3x3 conv, a quarter each from two and
    three stacked 3x3 convs (5x5 and 7x7 receptive fields), concatenated, then ReLU."""

    def __init__(self, channels: int, slope: float) -> None:
        super().__init__()
        if channels % 4:
            raise ValueError(f"SSH needs a multiple of 4 channels, got {channels}")
        half, quarter = channels // 2, channels // 4
        self.conv3x3 = conv_bn(channels, half, 3, None)
        self.conv5x5_1 = conv_bn(channels, quarter, 3, slope)
        self.conv5x5_2 = conv_bn(quarter, quarter, 3, None)
        self.conv7x7_2 = conv_bn(quarter, quarter, 3, slope)
        self.conv7x7_3 = conv_bn(quarter, quarter, 3, None)

    def forward(self, x: Tensor) -> Tensor:
        branch5 = self.conv5x5_1(x)
        out = torch.cat(
            [self.conv3x3(x), self.conv5x5_2(branch5), self.conv7x7_3(self.conv7x7_2(branch5))], 1
        )
        return F.relu(out)


def _flatten(x: Tensor, width: int) -> Tensor:
    """``(N, A * width, H, W)`` -> ``(N, H * W * A, width)`` (the priors' order)."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, width)


class RetinaFace(nn.Module):
    """RetinaFace on a registry backbone emitting ``cfg.levels``.

    ``forward(images, targets=None)``: ``images`` is a list of ``(3, H, W)`` tensors or an
    ``(N, 3, H, W)`` tensor, RGB pixels in [0, 255] (uint8 or float). In training mode the
    targets (per image ``boxes (K, 4)`` xyxy, ``landmarks (K, 5, 2)``, ``has_landmarks (K,)``,
    in pixels) give the dict of losses. In eval mode each image is resized as ``cfg.test`` says
    and the result is one dict per image with ``boxes (K, 4)``, ``scores (K,)`` and
    ``landmarks (K, 5, 2)`` in the original image's pixels, best first.
    """

    def __init__(self, backbone: Backbone, cfg: RetinaFaceConfig) -> None:
        super().__init__()
        specs = backbone.feature_specs
        self.cfg = cfg
        self.check_levels(specs, cfg)
        self.normalization = (
            PORT_NORMALIZATION if cfg.input_format == "bgr_mean" else backbone.normalization
        )
        slope = cfg.negative_slope
        c = cfg.fpn_channels
        self.backbone = backbone
        self.fpn = RetinaFaceFPN([s.channels for s in specs], c, slope)
        self.context = nn.ModuleList(SSH(c, slope) for _ in specs)
        anchors = [len(sizes) for sizes in cfg.priors.min_sizes]
        self.class_head = nn.ModuleList(nn.Conv2d(c, a * 2, 1) for a in anchors)
        self.box_head = nn.ModuleList(nn.Conv2d(c, a * 4, 1) for a in anchors)
        self.landmark_head = nn.ModuleList(nn.Conv2d(c, a * 10, 1) for a in anchors)
        self._priors: dict[tuple, tuple[Tensor, Tensor]] = {}

    @staticmethod
    def check_levels(specs: Sequence[FeatureSpec], cfg: RetinaFaceConfig) -> None:
        names = [s.name for s in specs]
        if names != list(cfg.levels):
            raise ValueError(f"RetinaFace reads {list(cfg.levels)}; the backbone emits {names}")
        p = cfg.priors
        if len(p.min_sizes) != len(specs) or len(p.steps) != len(specs):
            raise ValueError(
                f"model.priors needs one entry per level ({len(specs)}: {names}); got min_sizes "
                f"{p.min_sizes} and steps {p.steps}"
            )
        strides = [s.stride for s in specs]
        if list(p.steps) != strides:
            raise ValueError(
                f"model.priors.steps={list(p.steps)} but the backbone's levels {names} have "
                f"strides {strides}: set model.priors.steps={strides}"
            )

    # -- the network ------------------------------------------------------------------------
    def normalize(self, images: Tensor) -> Tensor:
        """``(N, 3, H, W)`` RGB pixels in [0, 255] -> the network's input."""
        if self.cfg.input_format == "bgr_mean":
            images = images.flip(1)
        return self.normalization.normalize(images)

    def head_outputs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, list[tuple[int, int]]]:
        """Normalized ``x (N, 3, H, W)`` -> ``logits (N, P, 2)``, ``box_deltas (N, P, 4)``,
        ``landmark_deltas (N, P, 10)`` and the feature-map shapes per level."""
        features = list(self.backbone(x).values())
        features = [ssh(f) for ssh, f in zip(self.context, self.fpn(features))]
        logits = torch.cat([_flatten(h(f), 2) for h, f in zip(self.class_head, features)], 1)
        boxes = torch.cat([_flatten(h(f), 4) for h, f in zip(self.box_head, features)], 1)
        points = torch.cat([_flatten(h(f), 10) for h, f in zip(self.landmark_head, features)], 1)
        return logits, boxes, points, [tuple(f.shape[-2:]) for f in features]

    def priors(self, shapes: list[tuple[int, int]], device: torch.device) -> tuple[Tensor, Tensor]:
        """``(priors (P, 4), cell corners (P, 2))`` of feature maps of ``shapes``; the last
        few are kept (photos of one size, training crops) and made on the device once."""
        p = self.cfg.priors
        if torch.jit.is_tracing():
            return make_priors(shapes, p.steps, p.min_sizes, device=device)
        key = (tuple(shapes), device)
        if key not in self._priors:
            if len(self._priors) >= PRIOR_CACHE_SIZE:
                self._priors.pop(next(iter(self._priors)))  # the oldest
            self._priors[key] = make_priors(shapes, p.steps, p.min_sizes, device=device)
        return self._priors[key]

    # -- training ---------------------------------------------------------------------------
    def _batch(self, images, resize: bool) -> tuple[Tensor, list[tuple[int, int]], list[float]]:
        """Normalized images, resized (eval) and padded bottom/right to a common size; their
        sizes after resizing and the resize factors."""
        if isinstance(images, Tensor) and images.dim() == 4 and not resize:
            n = len(images)
            return self.normalize(images), [tuple(images.shape[-2:])] * n, [1.0] * n
        out, sizes, scales = [], [], []
        for img in images:
            x = self.normalize(img[None])
            scale = self.test_scale(*img.shape[-2:]) if resize else 1.0
            if scale != 1.0:
                size = (round(img.shape[-2] * scale), round(img.shape[-1] * scale))
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            out.append(x)
            sizes.append(tuple(x.shape[-2:]))
            scales.append(scale)
        h = max(s[0] for s in sizes)
        w = max(s[1] for s in sizes)
        batch = torch.cat([F.pad(x, (0, w - x.shape[-1], 0, h - x.shape[-2])) for x in out])
        return batch, sizes, scales

    def test_scale(self, height: int, width: int) -> float:
        """The port's test-time resize factor (1 without ``test.target_size``)."""
        t = self.cfg.test
        if not t.target_size:
            return 1.0
        scale = t.target_size / min(height, width)
        if t.max_size and round(scale * max(height, width)) > t.max_size:
            scale = t.max_size / max(height, width)
        return scale

    def forward(self, images, targets: Sequence[dict[str, Tensor]] | None = None):
        if self.training:
            if targets is None:
                raise ValueError("training needs targets (boxes, landmarks, has_landmarks)")
            x, _, _ = self._batch(images, resize=False)
            logits, boxes, points, shapes = self.head_outputs(x)
            priors, _ = self.priors(shapes, x.device)
            return multibox_loss(
                logits, boxes, points, priors, targets, self.cfg.loss, self.cfg.priors.variances
            )
        images = list(images)
        pad = self.cfg.test.pad_batches
        if pad is None:  # auto
            pad = next(self.parameters()).device.type == "cuda"
        if pad:
            groups = [list(range(len(images)))]
        else:  # one pass per image size: each image as if alone
            by_size: dict[tuple, list[int]] = {}
            for i, img in enumerate(images):
                by_size.setdefault(tuple(img.shape[-2:]), []).append(i)
            groups = list(by_size.values())
        results: list[dict[str, Tensor]] = [{} for _ in images]
        for group in groups:
            x, sizes, scales = self._batch([images[i] for i in group], resize=True)
            boxes, scores, points, valid = self.detect(x, sizes_tensor(sizes, x.device))
            for k, (i, scale) in enumerate(zip(group, scales)):
                keep = valid[k]
                results[i] = {
                    "boxes": boxes[k][keep] / scale,
                    "scores": scores[k][keep],
                    "landmarks": points[k][keep] / scale,
                }
        return results

    # -- inference --------------------------------------------------------------------------
    def detect(
        self, x: Tensor, sizes: Tensor | None = None, *, fixed_shape: bool = False
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Batched inference on normalized, padded ``x (N, 3, H, W)``; ``sizes (N, 2)`` are the
        images' own (height, width) inside the padding (None: all of ``x``).

        Returns padded ``boxes (N, D, 4)`` xyxy, ``scores (N, D)``, ``landmarks (N, D, 5, 2)``
        in ``x``'s pixels and ``valid (N, D)``, best first. ``fixed_shape`` (ONNX export) makes
        ``D = test.max_detections`` without reading any value on the host.
        """
        logits, deltas, point_deltas, shapes = self.head_outputs(x)
        priors, corners = self.priors(shapes, x.device)
        return postprocess(
            logits,
            deltas,
            point_deltas,
            priors,
            corners,
            sizes,
            self.cfg.test,
            self.cfg.priors.variances,
            fixed_shape=fixed_shape,
        )


def postprocess(
    logits: Tensor,
    deltas: Tensor,
    point_deltas: Tensor,
    priors: Tensor,
    corners: Tensor,
    sizes: Tensor | None,
    cfg: RetinaFaceTestConfig,
    variances: Sequence[float],
    *,
    fixed_shape: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The port's post-processing for a whole batch: softmax face score, ``score >
    score_threshold`` (and, in a padded batch, priors whose cell lies inside the image), the
    ``pre_nms_top_k`` best, decoding, NMS at ``nms_threshold`` (boxes measured with
    ``nms_pixel_offset``), then the ``max_detections`` best kept. Decoding runs in fp32."""
    scores = logits.float().softmax(-1)[..., 1]  # (N, P)
    candidate = scores > cfg.score_threshold
    if sizes is not None:
        inside = (corners[:, 0] < sizes[:, 1:2]) & (corners[:, 1] < sizes[:, 0:1])
        candidate = candidate & inside
    masked = scores.masked_fill(~candidate, -1.0)
    n, p = scores.shape
    if fixed_shape:  # pad so that top-k always takes exactly pre_nms_top_k entries
        k = cfg.pre_nms_top_k
        masked = torch.cat([masked, masked.new_full((n, k), -1.0)], 1)
    else:  # no more candidates than the fullest image has (one read of a count)
        k = min(cfg.pre_nms_top_k, p, max(int(candidate.sum(1).max()), 1)) if p else 0
    top, index = masked.topk(k, dim=1)
    valid = top > cfg.score_threshold
    index = index.clamp(max=max(p - 1, 0))
    chosen = priors[index]  # (N, k, 4)
    boxes = decode_boxes(
        deltas.float().gather(1, index[..., None].expand(-1, -1, 4)), chosen, variances
    )
    points = decode_landmarks(
        point_deltas.float().gather(1, index[..., None].expand(-1, -1, 10)), chosen, variances
    )
    measured = torch.cat([boxes[..., :2], boxes[..., 2:] + cfg.nms_pixel_offset], -1)
    keep = group_nms(measured, top, valid, cfg.nms_threshold)
    rank = keep.long().cumsum(1)
    keep = keep & (rank <= cfg.max_detections)
    d = cfg.max_detections if fixed_shape else min(cfg.max_detections, k)
    positions = torch.arange(keep.shape[1], device=keep.device)
    order = torch.where(keep, positions, positions + keep.shape[1]).argsort(1)[:, :d]
    return (
        boxes.gather(1, order[..., None].expand(-1, -1, 4)),
        top.gather(1, order),
        points.gather(1, order[..., None, None].expand(-1, -1, 5, 2)),
        keep.gather(1, order),
    )
