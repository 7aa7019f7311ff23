"""Augmentation pipelines built on albumentations, seeded per sample.

A transform is called as ``transform(image, ..., seed)``: all its randomness comes from ``seed``,
so a sample is augmented the same way whichever worker or rank loads it (see tasks.engine.data).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np


def photometric(p: float = 0.5) -> list[A.BasicTransform]:
    """MMSegmentation's PhotoMetricDistortion in albumentations terms: brightness +-32,
    contrast 0.5-1.5, saturation 0.5-1.5, hue +-18 degrees, each applied with probability p."""
    return [
        A.RandomBrightnessContrast(brightness_limit=32 / 255, contrast_limit=0.5, p=p),
        A.HueSaturationValue(hue_shift_limit=9, sat_shift_limit=40, val_shift_limit=0, p=p),
    ]


@dataclass
class SegTrainTransform:
    """Random rescale, crop (padding the mask with the ignore label), flip, photometric.

    ``scale=(long, short)``: the image is first fitted inside ``long x short`` times a ratio drawn
    from ``ratio_range`` (MMSegmentation's RandomResize with keep_ratio); ``scale=None`` rescales
    the original size by the ratio. Masks are resampled nearest, so labels (and 255) survive.
    """

    crop_size: tuple[int, int] = (512, 512)  # (height, width)
    scale: tuple[int, int] | None = None
    ratio_range: tuple[float, float] = (0.5, 2.0)
    ignore_index: int = 255
    flip: bool = True
    color: bool = True

    def __post_init__(self) -> None:
        ops: list[A.BasicTransform] = [
            A.RandomCrop(
                *self.crop_size,
                pad_if_needed=True,
                pad_position="top_left",
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=self.ignore_index,
            )
        ]
        if self.flip:
            ops.append(A.HorizontalFlip(p=0.5))
        if self.color:
            ops += photometric()
        self.pipeline = A.Compose(ops)

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, seed: int
    ) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        h, w = image.shape[:2]
        ratio = rng.uniform(*self.ratio_range)
        if self.scale is not None:
            long, short = self.scale
            factor = min(long * ratio / max(h, w), short * ratio / min(h, w))
        else:
            factor = ratio
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        self.pipeline.set_random_seed(int(rng.integers(2**31)))
        out = self.pipeline(image=image, mask=mask)
        return out["image"], out["mask"]


def shortest_side_scale(h: int, w: int, short: float, max_size: float) -> float:
    """detectron2's ResizeShortestEdge: shorter side to ``short``, longer side at most
    ``max_size``."""
    scale = short / min(h, w)
    if max(h, w) * scale > max_size:
        scale = max_size / max(h, w)
    return scale


@dataclass
class DetTrainTransform:
    """Multi-scale shortest-side resize, horizontal flip, optional photometric distortion and
    large-scale jitter; boxes and instance masks move with the image (albumentations),
    degenerate boxes are dropped with their masks.

    ``large_scale_jitter=(low, high)`` replaces the resize by LSJ: scale to
    ``[low, high] x lsj_size`` (longer side) then crop/pad to ``lsj_size`` square.
    """

    short_sizes: tuple[int, ...] = (640, 672, 704, 736, 768, 800)
    max_size: int = 1333
    flip: bool = True
    color: bool = False
    large_scale_jitter: tuple[float, float] | None = None
    lsj_size: int = 1024
    min_box_size: float = 1.0

    def __post_init__(self) -> None:
        ops: list[A.BasicTransform] = []
        if self.large_scale_jitter is not None:
            ops.append(
                A.RandomCrop(
                    self.lsj_size,
                    self.lsj_size,
                    pad_if_needed=True,
                    pad_position="top_left",
                    border_mode=cv2.BORDER_CONSTANT,
                    fill=0,
                )
            )
        if self.flip:
            ops.append(A.HorizontalFlip(p=0.5))
        if self.color:
            ops += photometric()
        bbox = A.BboxParams(
            format="pascal_voc",
            label_fields=["labels", "index"],
            clip=True,
            min_width=self.min_box_size,
            min_height=self.min_box_size,
        )
        self.pipeline = A.Compose(ops, bbox_params=bbox)

    def __call__(
        self,
        image: np.ndarray,
        boxes: np.ndarray,
        labels: np.ndarray,
        seed: int,
        masks: Callable[[int, int], np.ndarray] | None = None,
    ):
        """``(image, boxes, labels, masks)`` transformed; ``masks`` draws the ``(K, H, W)``
        instance masks at a given size (they are drawn at the resized size, then flipped and
        cropped with the image), or is None (None returned)."""
        rng = np.random.default_rng(seed)
        h, w = image.shape[:2]
        if self.large_scale_jitter is not None:
            scale = rng.uniform(*self.large_scale_jitter) * self.lsj_size / max(h, w)
        else:
            scale = shortest_side_scale(h, w, float(rng.choice(self.short_sizes)), self.max_size)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        sx, sy = size[0] / w, size[1] / h
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4) * np.array(
            [sx, sy, sx, sy], np.float32
        )
        self.pipeline.set_random_seed(int(rng.integers(2**31)))
        targets = {"bboxes": boxes, "labels": np.asarray(labels, np.int64)}
        targets["index"] = np.arange(len(boxes))
        drawn = masks is not None and len(boxes) > 0
        if drawn:
            targets["masks"] = masks(size[1], size[0])
        out = self.pipeline(image=image, **targets)
        kept = np.asarray(out["index"], np.int64)
        if drawn:
            masks = np.asarray(out["masks"], np.uint8)[kept]
        elif masks is not None:  # no instances: no masks, at the output size
            masks = np.zeros((0, *out["image"].shape[:2]), np.uint8)
        return (
            out["image"],
            np.asarray(out["bboxes"], np.float32).reshape(-1, 4),
            np.asarray(out["labels"], np.int64),
            masks,
        )
