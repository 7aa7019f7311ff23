"""Pictures of segmentation results: palette label PNGs, colour overlays with a legend.

Label PNGs keep the Pascal VOC colour map (their pixel values are the class indices; any VOC
tool reads them). Overlays use colours chosen to be told apart on photos: saturated, far apart
in hue and lightness, none of them the dark reds and browns of VOC's first classes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from resvision.tasks.engine.files import atomic_write_bytes

# 20 colours that stay distinct on photos and from each other (after Kelly's colours of maximum
# contrast, without black, white and the greys), then VOC's map for higher class indices
DISTINCT = np.array(
    [
        (255, 179, 0),
        (128, 62, 117),
        (255, 104, 0),
        (166, 189, 215),
        (193, 0, 32),
        (206, 162, 98),
        (0, 125, 52),
        (246, 118, 142),
        (0, 83, 138),
        (255, 122, 92),
        (40, 40, 200),
        (120, 255, 120),
        (179, 40, 81),
        (255, 255, 80),
        (127, 24, 13),
        (147, 170, 0),
        (200, 0, 255),
        (241, 58, 19),
        (0, 160, 255),
        (0, 200, 200),
    ],
    np.uint8,
)


def overlay_palette(num_classes: int) -> np.ndarray:
    """``(max(num_classes, 256), 3)`` colours for overlays: class 0 (background) black, then
    the distinct colours."""
    from resvision.datasets.segmentation import voc_palette

    palette = voc_palette(max(num_classes, 256)).copy()
    k = min(len(DISTINCT), len(palette) - 1)
    palette[1 : k + 1] = DISTINCT[:k]
    return palette


def save_label_png(labels: np.ndarray, path: str | Path, palette: np.ndarray) -> None:
    """A palette PNG whose pixel values are the class indices (readable as a VOC mask)."""
    from PIL import Image

    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette(palette[:256].reshape(-1).tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(Path(path), buf.getvalue(), durable=False)


def overlay(
    image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5
) -> np.ndarray:
    """Blend class colours over ``image`` (background, class 0, left as is)."""
    colours = palette[labels].astype(np.float32)
    out = image.astype(np.float32)
    fg = labels > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * colours[fg]
    return out.clip(0, 255).astype(np.uint8)


def add_legend(
    image: np.ndarray, labels: np.ndarray, class_names: Sequence[str], palette: np.ndarray
) -> np.ndarray:
    """``image`` with a strip below it naming the classes present (background left out), each
    with its colour and its share of the pixels."""
    present = [int(k) for k in np.unique(labels) if k > 0]
    if not present:
        return image
    counts = np.bincount(labels.reshape(-1), minlength=max(present) + 1)
    scale = max(0.4, min(1.0, image.shape[1] / 900))
    row_h = int(22 * scale) + 4
    entries = []
    for k in present:
        name = class_names[k] if k < len(class_names) else str(k)
        entries.append((k, f"{name} {100 * counts[k] / labels.size:.1f}%"))
    widths = [
        cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, 1)[0][0] + row_h + 12
        for _, t in entries
    ]
    rows, x, lines = [], 0, 1
    for w in widths:
        if x and x + w > image.shape[1]:
            lines, x = lines + 1, 0
        rows.append((lines - 1, x))
        x += w
    strip = np.full((lines * row_h + 4, image.shape[1], 3), 255, np.uint8)
    for (k, text), (line, x0) in zip(entries, rows):
        y0 = 2 + line * row_h
        colour = tuple(int(c) for c in palette[k])
        cv2.rectangle(strip, (x0 + 4, y0 + 3), (x0 + row_h, y0 + row_h - 3), colour, -1)
        cv2.putText(
            strip,
            text,
            (x0 + row_h + 6, y0 + row_h - 7),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5 * scale,
            (20, 20, 20),
            1,
            cv2.LINE_AA,
        )
    return np.concatenate([image, strip], 0)
