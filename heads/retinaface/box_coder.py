"""RetinaFace's priors and its box and landmark encoding, in pixels.

The PyTorch port builds priors in coordinates normalized by the image size and scales decoded
boxes back; every step of its encoding is invariant to that scale (centre offsets divided by the
prior's size, log size ratios), so working in pixels gives the same values while priors no
longer depend on the image size: a batch of images of different sizes shares one set.

Priors are ordered as the heads' outputs are flattened: level, then row, column, and the
level's prior sizes (``(N, A * C, H, W)`` permuted to ``(N, H, W, A, C)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def make_priors(
    shapes: Sequence[tuple[int, int]],
    steps: Sequence[int],
    min_sizes: Sequence[Sequence[int]],
    *,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor]:
    """Priors for feature maps of ``shapes`` (height, width) per level.

    Returns:
        ``priors (P, 4)`` float32 ``(cx, cy, w, h)`` in input pixels, and ``corners (P, 2)``:
        the ``(x, y)`` of each prior's feature-map cell in input pixels (``(j, i) * step``), by
        which a padded batch tells the priors that lie inside an image (``x < width``).
    """
    priors, corners = [], []
    for (fh, fw), step, sizes in zip(shapes, steps, min_sizes):
        ys = torch.arange(fh, device=device, dtype=torch.float32) * step
        xs = torch.arange(fw, device=device, dtype=torch.float32) * step
        y0, x0 = torch.meshgrid(ys, xs, indexing="ij")  # (fh, fw)
        a = len(sizes)
        x0 = x0[..., None].expand(fh, fw, a)
        y0 = y0[..., None].expand(fh, fw, a)
        side = torch.tensor(sizes, device=device, dtype=torch.float32).expand(fh, fw, a)
        half = 0.5 * step
        priors.append(torch.stack([x0 + half, y0 + half, side, side], -1).reshape(-1, 4))
        corners.append(torch.stack([x0, y0], -1).reshape(-1, 2))
    return torch.cat(priors), torch.cat(corners)


def point_form(priors: Tensor) -> Tensor:
    """``(..., 4)`` ``(cx, cy, w, h)`` -> ``(x1, y1, x2, y2)``."""
    return torch.cat(
        [priors[..., :2] - priors[..., 2:] / 2, priors[..., :2] + priors[..., 2:] / 2], -1
    )


def encode_boxes(boxes: Tensor, priors: Tensor, variances: Sequence[float]) -> Tensor:
    """``boxes (..., P, 4)`` xyxy matched to ``priors (P, 4)`` -> regression targets."""
    centre = ((boxes[..., :2] + boxes[..., 2:]) / 2 - priors[:, :2]) / (
        variances[0] * priors[:, 2:]
    )
    size = torch.log((boxes[..., 2:] - boxes[..., :2]) / priors[:, 2:]) / variances[1]
    return torch.cat([centre, size], -1)


def decode_boxes(deltas: Tensor, priors: Tensor, variances: Sequence[float]) -> Tensor:
    """``deltas (..., 4)`` -> xyxy boxes, the port's arithmetic (``x2 = x1 + w``)."""
    centre = priors[..., :2] + deltas[..., :2] * variances[0] * priors[..., 2:]
    size = priors[..., 2:] * torch.exp(deltas[..., 2:] * variances[1])
    top_left = centre - size / 2
    return torch.cat([top_left, top_left + size], -1)


def encode_landmarks(points: Tensor, priors: Tensor, variances: Sequence[float]) -> Tensor:
    """``points (..., P, 5, 2)`` matched to ``priors (P, 4)`` -> ``(..., P, 10)`` targets."""
    offsets = (points - priors[:, None, :2]) / (variances[0] * priors[:, None, 2:])
    return offsets.flatten(-2)


def decode_landmarks(deltas: Tensor, priors: Tensor, variances: Sequence[float]) -> Tensor:
    """``deltas (..., 10)`` -> ``(..., 5, 2)`` points in pixels."""
    d = deltas.unflatten(-1, (5, 2))
    return priors[..., None, :2] + d * variances[0] * priors[..., None, 2:]
