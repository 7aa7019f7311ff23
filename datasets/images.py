"""Reading images and label maps, with errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(ValueError):
    """An image or mask file that is missing or cannot be decoded."""


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB; grey and RGBA images are converted."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image file {str(path)!r} does not exist")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageReadError(
            f"image file {str(path)!r} cannot be decoded ({data.size} bytes): it is truncated "
            "or not an image; replace or remove it"
        )
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """``(H, W)`` uint8 class indices from a palette/grey PNG (palette indices, not colours)."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"mask file {str(path)!r} does not exist")
    try:
        with Image.open(path) as img:
            if img.mode in ("P", "L", "I;16", "I"):
                arr = np.asarray(img)
            else:
                raise ImageReadError(
                    f"mask file {str(path)!r} is a {img.mode} image; label masks must be "
                    "single-channel (palette or grey) PNGs holding class indices"
                )
    except ImageReadError:
        raise
    except Exception as e:  # PIL raises many types for broken files
        raise ImageReadError(f"mask file {str(path)!r} cannot be decoded: {e}") from e
    if arr.max(initial=0) > 255:
        raise ImageReadError(f"mask file {str(path)!r} holds values above 255 ({arr.max()})")
    return arr.astype(np.uint8)


def list_images(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageReadError(f"image folder {str(folder)!r} does not exist")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
