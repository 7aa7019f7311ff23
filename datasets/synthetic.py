"""Procedural scenes of textured shapes with exact masks and boxes, deterministic by seed.

One generator serves segmentation (semantic masks) and detection (boxes of the visible parts):
shapes of several classes, each with its own texture family and random colours, varied sizes and
aspect ratios, rotations, occlusions (later shapes cover earlier ones) and unlabeled clutter
(lines and blobs) on a textured background.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SHAPE_CLASSES = ("ellipse", "rectangle", "triangle", "star")


@dataclass
class Scene:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    masks: list[np.ndarray]  # visible part of each object, (H, W) bool
    labels: list[int]  # 1-based class index into SHAPE_CLASSES
    boxes: np.ndarray  # (N, 4) float32 xyxy of the visible parts, pixel edges

    def semantic(self, ignore_index: int | None = None, border: int = 0) -> np.ndarray:
        """``(H, W)`` uint8: 0 background, k for class k; optional VOC-style void border."""
        out = np.zeros(self.image.shape[:2], np.uint8)
        for mask, label in zip(self.masks, self.labels):
            out[mask] = label
        if ignore_index is not None and border > 0:
            edges = np.zeros_like(out, dtype=bool)
            kernel = np.ones((2 * border + 1, 2 * border + 1), np.uint8)
            for mask in self.masks:
                m = mask.astype(np.uint8)
                edges |= (cv2.dilate(m, kernel) - cv2.erode(m, kernel)).astype(bool)
            out[edges] = ignore_index
        return out


def _hsv_colour(hue: float, sat: float, val: float) -> np.ndarray:
    pixel = np.array([[[hue % 180, sat, val]]], np.uint8)
    return cv2.cvtColor(pixel, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _texture(rng: np.random.Generator, kind: int, h: int, w: int) -> np.ndarray:
    """``(h, w, 3)`` float texture of family ``kind``: its own pattern and hue band.

    Class k's colours are drawn around hue 45 k degrees (OpenCV units: 180 per turn), saturated;
    backgrounds are desaturated, so colour and pattern both identify a class.
    """
    hue = 45 * kind + rng.uniform(-12, 12)
    c1 = _hsv_colour(hue, rng.uniform(150, 255), rng.uniform(150, 255))
    c2 = _hsv_colour(hue + rng.uniform(-8, 8), rng.uniform(150, 255), rng.uniform(40, 110))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:  # speckled solid
        t = (rng.uniform(0, 1, (h, w)) < 0.15).astype(np.float32)
    elif kind == 1:  # checkerboard
        period = rng.uniform(4, 10)
        t = ((np.floor(xx / period) + np.floor(yy / period)) % 2).astype(np.float32)
    elif kind == 2:  # stripes at a random angle
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 9)
        t = (np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period) > 0).astype(
            np.float32
        )
    else:  # dots on a grid
        period = rng.uniform(5, 9)
        t = (
            ((xx % period) - period / 2) ** 2 + ((yy % period) - period / 2) ** 2
            < (period / 3.2) ** 2
        ).astype(np.float32)
    return c1 * (1 - t[..., None]) + c2 * t[..., None]


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth, weakly coloured variations of grey with noise."""
    grid = rng.uniform(40, 220, (rng.integers(2, 5), rng.integers(2, 5), 1)).astype(np.float32)
    tint = rng.uniform(-25, 25, (1, 1, 3)).astype(np.float32)
    base = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)[..., None] + tint
    return np.clip(base + rng.normal(0, 6, (h, w, 3)), 0, 255)


def _shape_mask(rng: np.random.Generator, label: int, h: int, w: int, size: float) -> np.ndarray:
    """A filled shape of class ``label`` (1-based) with random position, aspect and rotation."""
    mask = np.zeros((h, w), np.uint8)
    cx, cy = rng.uniform(size * 0.3, w - size * 0.3), rng.uniform(size * 0.3, h - size * 0.3)
    aspect = float(np.exp(rng.uniform(-0.6, 0.6)))
    sx, sy = size / 2 * aspect**0.5, size / 2 / aspect**0.5
    angle = rng.uniform(0, 360)
    name = SHAPE_CLASSES[label - 1]
    if name == "ellipse":
        cv2.ellipse(
            mask, (int(cx), int(cy)), (max(int(sx), 2), max(int(sy), 2)), angle, 0, 360, 1, -1
        )
        return mask.astype(bool)
    if name == "rectangle":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32)
    elif name == "triangle":
        pts = np.array([[0, -1.15], [1, 0.75], [-1, 0.75]], np.float32)
    else:  # star
        t = np.arange(10) * np.pi / 5 - np.pi / 2
        r = np.where(np.arange(10) % 2 == 0, 1.15, 0.5)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1).astype(np.float32)
    rot = np.deg2rad(angle)
    rmat = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]], np.float32)
    pts = (pts * [sx, sy]) @ rmat.T + [cx, cy]
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask.astype(bool)


def make_scene(
    seed: int,
    height: int = 128,
    width: int = 128,
    *,
    max_objects: int = 4,
    min_size: float = 0.15,
    max_size: float = 0.5,
    clutter: int = 3,
    min_visible: float = 0.35,
    num_classes: int = len(SHAPE_CLASSES),
) -> Scene:
    """A scene drawn from ``seed`` alone: same seed, same pixels, masks and boxes.

    Sizes are fractions of the shorter image side. A new shape that would leave an earlier one
    less than ``min_visible`` visible is redrawn elsewhere, so every painted object is labeled
    and every label has a substantial visible part.
    """
    rng = np.random.default_rng(seed)
    image = _background(rng, height, width)
    for _ in range(int(rng.integers(0, clutter + 1))):  # unlabeled clutter: lines
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        p1 = tuple(int(v) for v in rng.uniform(0, [width, height]))
        p2 = tuple(int(v) for v in rng.uniform(0, [width, height]))
        cv2.line(image, p1, p2, colour, int(rng.integers(1, 3)))
    short = min(height, width)
    masks: list[np.ndarray] = []
    areas: list[int] = []
    labels: list[int] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(6):
            label = int(rng.integers(1, num_classes + 1))
            mask = _shape_mask(rng, label, height, width, rng.uniform(min_size, max_size) * short)
            if mask.sum() >= 16 and all(
                (m & ~mask).sum() >= min_visible * a for m, a in zip(masks, areas)
            ):
                break
        else:
            continue
        texture = _texture(rng, (label - 1) % 4, height, width)
        image[mask] = texture[mask]
        masks = [m & ~mask for m in masks]  # occlusion: the new shape covers earlier ones
        masks.append(mask)
        areas.append(int(mask.sum()))
        labels.append(label)
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    boxes = np.array(
        [
            [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            for ys, xs in (np.nonzero(m) for m in masks)
        ],
        np.float32,
    ).reshape(-1, 4)
    return Scene(image=image, masks=masks, labels=labels, boxes=boxes)
