"""Pictures of detection results: instance masks filled in their class colour, boxes with class
names and scores."""

from __future__ import annotations

import cv2
import numpy as np


def class_colours(num: int) -> np.ndarray:
    """``(num + 1, 3)`` RGB colours, one per label (0 = background), fixed by seed."""
    rng = np.random.default_rng(7)
    return rng.integers(40, 230, size=(num + 1, 3))


def fill_masks(
    image: np.ndarray, masks: np.ndarray, colours: np.ndarray, alpha: float = 0.5
) -> np.ndarray:
    """``masks (K, H, W)`` (boolean) filled over a copy of ``image`` (RGB), each in its colour
    (``colours (K, 3)``) at opacity ``alpha``, the later ones over the earlier ones; each mask's
    outline drawn opaque."""
    out = image.astype(np.float32)
    for mask, colour in zip(np.asarray(masks, bool), np.asarray(colours, np.float32)):
        out[mask] = (1 - alpha) * out[mask] + alpha * colour
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    for mask, colour in zip(np.asarray(masks, bool), colours):
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(out, contours, -1, tuple(int(v) for v in colour), 1)
    return out


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    names: np.ndarray,
    colours: np.ndarray,
    masks: np.ndarray | None = None,
) -> np.ndarray:
    """Boxes with "name score" captions on a copy of ``image`` (RGB); with ``masks (K, H, W)``
    (boolean, a Mask R-CNN's) each instance is first filled in its class colour."""
    out = image.copy() if masks is None else fill_masks(image, masks[::-1], colours[::-1])
    thickness = max(1, round(max(image.shape[:2]) / 400))
    for box, score, name, colour in zip(boxes, scores, names, colours):
        x1, y1, x2, y2 = (int(np.rint(v)) for v in box)
        c = tuple(int(v) for v in colour)
        cv2.rectangle(out, (x1, y1), (x2, y2), c, thickness)
        text = f"{name} {score:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        cv2.rectangle(out, (x1, max(0, y1 - th - 4)), (x1 + tw + 2, max(th + 4, y1)), c, -1)
        cv2.putText(
            out,
            text,
            (x1 + 1, max(th + 1, y1 - 3)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
    return out
