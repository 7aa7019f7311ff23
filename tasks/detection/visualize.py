"""Pictures of detection results: boxes with class names and scores."""

from __future__ import annotations

import cv2
import numpy as np


def class_colours(num: int) -> np.ndarray:
    """``(num + 1, 3)`` RGB colours, one per label (0 = background), fixed by seed."""
    rng = np.random.default_rng(7)
    return rng.integers(40, 230, size=(num + 1, 3))


def draw_detections(
    image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, names: np.ndarray, colours: np.ndarray
) -> np.ndarray:
    """Boxes with "name score" captions on a copy of ``image`` (RGB)."""
    out = image.copy()
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
