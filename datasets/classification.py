"""A built-in 32 px classification set: procedural shapes, deterministic by seed.

Ten classes: five shapes (disc, square, triangle, cross, ring) times two fills (solid,
striped), drawn at a random position, size and rotation in a random colour on a noisy
background of another colour, with a random line as clutter. It stands in for CIFAR-10 where
nothing may be downloaded: the same size, the same number of classes, a task a small ResNet
learns in minutes on a CPU and that still has something left to fit for the deeper ones.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

SHAPES = ("disc", "square", "triangle", "cross", "ring")
FILLS = ("solid", "striped")
CLASS_NAMES = tuple(f"{fill} {shape}" for shape in SHAPES for fill in FILLS)


def _colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A background and a foreground colour that differ clearly (RGB distance > 120)."""
    while True:
        bg, fg = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        if np.linalg.norm(bg - fg) > 120:
            return bg, fg


def _shape_mask(rng: np.random.Generator, shape: str, size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    r = rng.uniform(0.28, 0.42) * size
    cx, cy = rng.uniform(r, size - r, 2)
    angle = rng.uniform(0, 2 * np.pi)
    if shape == "disc":
        cv2.ellipse(
            mask,
            (round(cx), round(cy)),
            (round(r), round(r * rng.uniform(0.7, 1))),
            np.degrees(angle),
            0,
            360,
            1,
            -1,
        )
    elif shape == "ring":
        cv2.circle(mask, (round(cx), round(cy)), round(r), 1, max(2, round(r / 3)))
    elif shape in ("square", "triangle"):
        corners = 4 if shape == "square" else 3
        t = angle + 2 * np.pi * np.arange(corners) / corners
        points = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    else:  # cross: two bars
        for a in (angle, angle + np.pi / 2):
            d = np.array([np.cos(a), np.sin(a)]) * r
            p, q = np.round([cx - d[0], cy - d[1]]), np.round([cx + d[0], cy + d[1]])
            cv2.line(mask, tuple(map(int, p)), tuple(map(int, q)), 1, max(2, round(r / 2.5)))
    return mask.astype(bool)


def draw_sample(label: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """One ``(size, size, 3)`` uint8 RGB image of class ``label``."""
    shape, fill = SHAPES[label // 2], FILLS[label % 2]
    bg, fg = _colour_pair(rng)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    tilt = rng.normal(0, 30, 2)
    image = bg + (xx * tilt[0] + yy * tilt[1])[..., None]  # a soft gradient
    if rng.uniform() < 0.5:  # clutter: a line in a third colour
        ends = rng.integers(0, size, 4)
        clutter = np.zeros((size, size), np.uint8)
        cv2.line(clutter, tuple(map(int, ends[:2])), tuple(map(int, ends[2:])), 1, 1)
        image[clutter.astype(bool)] = rng.uniform(0, 255, 3)
    mask = _shape_mask(rng, shape, size)
    colour = np.broadcast_to(fg, (size, size, 3)).copy()
    if fill == "striped":
        a = rng.uniform(0, np.pi)
        period = rng.uniform(3, 4) / size
        stripes = ((xx * np.cos(a) + yy * np.sin(a)) / period).astype(int) % 2 == 1
        colour[stripes] = bg  # gaps that show the background colour
    image[mask] = colour[mask]
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_classification_set(num: int, *, size: int = 32, seed: int = 0):
    """``(images (num, size, size, 3) uint8 RGB, labels (num,) int64)``, balanced classes."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num) % len(CLASS_NAMES)).astype(np.int64)
    images = np.stack([draw_sample(int(k), rng, size) for k in labels]) if num else None
    if images is None:
        images = np.zeros((0, size, size, 3), np.uint8)
    return images, labels


class SyntheticClassification(Dataset):
    """``(image (3, size, size) float in [0, 255], label)`` pairs of :data:`CLASS_NAMES`."""

    class_names = CLASS_NAMES

    def __init__(self, num: int, *, size: int = 32, seed: int = 0) -> None:
        self.images, self.labels = make_classification_set(num, size=size, seed=seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(self.images[index]).permute(2, 0, 1).float()
        return image, int(self.labels[index])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images ``(N, 3, size, size)`` float in [0, 255] and labels ``(N,)``, at once."""
        images = torch.from_numpy(self.images).permute(0, 3, 1, 2).float()
        return images, torch.from_numpy(self.labels)
