"""Pictures of face detections: boxes, five landmarks, and a caption per face."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

# left eye, right eye, nose tip, left and right mouth corner (the port's detect.py colours)
LANDMARK_COLOURS = ((255, 0, 0), (255, 255, 0), (255, 0, 255), (0, 255, 0), (0, 0, 255))
BOX_COLOUR = (40, 220, 40)


def draw_faces(
    image: np.ndarray,
    boxes: np.ndarray,
    landmarks: np.ndarray | None = None,
    captions: Sequence[str] | None = None,
    colours: Sequence[tuple[int, int, int]] | None = None,
) -> np.ndarray:
    """Boxes, landmark dots and captions (e.g. scores, names) on a copy of ``image`` (RGB)."""
    out = np.ascontiguousarray(image).copy()
    thickness = max(1, round(max(image.shape[:2]) / 400))
    for k, box in enumerate(np.asarray(boxes).reshape(-1, 4)):
        x1, y1, x2, y2 = (int(np.rint(v)) for v in box)
        colour = tuple(int(c) for c in (colours[k] if colours is not None else BOX_COLOUR))
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        if landmarks is not None:
            radius = max(1, round(min(x2 - x1, y2 - y1) / 25))
            for (x, y), dot in zip(landmarks[k], LANDMARK_COLOURS):
                cv2.circle(out, (int(np.rint(x)), int(np.rint(y))), radius, dot, -1, cv2.LINE_AA)
        if captions is not None and captions[k]:
            text = captions[k]
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
            top = max(0, y1 - th - 4)
            cv2.rectangle(out, (x1, top), (x1 + tw + 2, top + th + 4), colour, -1)
            cv2.putText(
                out,
                text,
                (x1 + 1, top + th + 1),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.4,
                (255, 255, 255),
                1,
                cv2.LINE_AA,
            )
    return out
