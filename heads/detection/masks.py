"""The mask branch of Mask R-CNN in torchvision's arithmetic: training targets, the mask loss's
foreground rows, mask selection, and pasting masks into the image.

- :func:`project_masks` is torchvision's ``project_masks_on_boxes`` (each foreground RoI's matched
  ground-truth mask resampled on the RoI by RoIAlign), the target of ``maskrcnn_loss``;
- :func:`foreground_rows` finds the foreground RoIs of a whole padded batch with one host
  synchronisation (torchvision selects them image by image, one synchronisation each);
- :func:`paste_masks` is ``paste_masks_in_image`` (box expanded by one mask pixel, bilinear
  resize to the box, placed in the image) as two batched matrix products per mask instead of a
  Python loop over masks: the same numbers up to float rounding, on any device, and traceable
  for ONNX with a dynamic number of masks.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import roi_align


def project_masks(gt_masks: Tensor, boxes: Tensor, gt_index: Tensor, size: int) -> Tensor:
    """torchvision's ``project_masks_on_boxes``: ``gt_masks (G, H, W)`` of one image, ``boxes
    (R, 4)`` in its pixels and ``gt_index (R,)`` their matched masks -> ``(R, size, size)``
    float targets (RoIAlign, ``aligned=False``, adaptive sampling, as torchvision calls it)."""
    rois = torch.cat([gt_index[:, None].to(boxes.dtype), boxes], dim=1)
    return roi_align(gt_masks[:, None].to(rois.dtype), rois, (size, size), 1.0)[:, 0]


def foreground_rows(
    rois: Tensor, labels: Tensor, used: Tensor, num_images: int
) -> tuple[Tensor, list[int]]:
    """The rows of ``rois (R, 5)`` (image index first) that are sampled (``used``) foreground
    (``labels > 0``), grouped by image in their order, and their number in each image. The
    counts are the one host synchronisation of the batch."""
    foreground = used & (labels > 0)
    image = rois[:, 0].to(torch.int64)
    counts = torch.zeros(num_images, dtype=torch.int64, device=rois.device)
    counts = counts.index_add_(0, image, foreground.to(torch.int64)).tolist()
    order = torch.where(foreground, image, num_images).argsort(stable=True)
    return order[: sum(counts)], counts


def select_class_masks(logits: Tensor, labels: Tensor) -> Tensor:
    """``logits (R, C, M, M)`` -> ``(R, M, M)``: each row's map of its own class."""
    m = logits.shape[-1]
    index = labels.view(-1, 1, 1, 1).expand(-1, 1, m, m)
    return logits.gather(1, index).squeeze(1)


def expand_boxes(boxes: Tensor, scale: float) -> Tensor:
    """torchvision's ``expand_boxes``: each box scaled by ``scale`` about its centre."""
    w_half = (boxes[:, 2] - boxes[:, 0]) * 0.5
    h_half = (boxes[:, 3] - boxes[:, 1]) * 0.5
    x_c = (boxes[:, 2] + boxes[:, 0]) * 0.5
    y_c = (boxes[:, 3] + boxes[:, 1]) * 0.5
    w_half = w_half * scale
    h_half = h_half * scale
    return torch.stack([x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half], dim=1)


def _resize_weights(start: Tensor, stop: Tensor, source: int, extent: int) -> Tensor:
    """``(K, extent, source)``: row ``p`` holds the bilinear weights (``F.interpolate``,
    ``align_corners=False``) with which pixel ``p`` of the image takes the ``source`` mask
    pixels, when each mask ``k`` is resized to the pixels ``start[k]..stop[k]`` (inclusive, the
    integer box) and zero outside them."""
    length = (stop - start + 1).clamp(min=1)
    pos = torch.arange(extent, device=start.device)[None] - start[:, None]  # pixel in the box
    # PyTorch's scale, input / output size, in float32 (``source / tensor`` would take the
    # reciprocal first: another rounding)
    ratio = torch.full_like(length, source, dtype=torch.float32) / length.to(torch.float32)
    src = ((pos.to(torch.float32) + 0.5) * ratio[:, None] - 0.5).clamp(min=0)
    low = src.to(torch.int64)
    lam = (src - low).clamp(0, 1)
    high = torch.where(low < source - 1, low + 1, low)
    inside = ((pos >= 0) & (pos < length[:, None])).to(torch.float32)
    weights = torch.zeros(*pos.shape, source, device=start.device)
    # outside the box the weights are 0 (and the clamped index harmless)
    weights.scatter_add_(2, low.clamp(max=source - 1)[..., None], ((1 - lam) * inside)[..., None])
    weights.scatter_add_(2, high.clamp(max=source - 1)[..., None], (lam * inside)[..., None])
    return weights


def paste_masks(masks: Tensor, boxes: Tensor, height: int, width: int, padding: int = 1) -> Tensor:
    """torchvision's ``paste_masks_in_image``: ``masks (K, M, M)`` (probabilities of the RoI
    ``boxes (K, 4)``, xyxy in the image's pixels) -> ``(K, height, width)``.

    As there: the mask is padded by ``padding`` zero pixels, the box expanded by as much and
    truncated to integers, the mask resized bilinearly to the box's pixels and placed in the
    image (zero elsewhere). The resize is separable, so each mask is ``Wy @ mask @ Wx^T``.
    """
    m = masks.shape[-1]
    source = m + 2 * padding
    padded = torch.nn.functional.pad(masks.float(), (padding,) * 4)
    box = expand_boxes(boxes.float(), float(source) / m).to(torch.int64)
    wy = _resize_weights(box[:, 1], box[:, 3], source, height)  # (K, H, S)
    wx = _resize_weights(box[:, 0], box[:, 2], source, width)  # (K, W, S)
    return torch.bmm(torch.bmm(wy, padded), wx.transpose(1, 2))
