"""Reading images and label maps, with errors that name the file; what predictors accept as an
image (paths, arrays, PIL images, tensors)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Union

import cv2
import numpy as np
import torch
from PIL import Image

from .inputs import IMAGE_SUFFIXES


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


def encode_rgb(image: np.ndarray, suffix: str = ".jpg") -> bytes:
    """An ``(H, W, 3)`` uint8 RGB image encoded as ``suffix`` says (``.jpg``, ``.png``...), for
    writing atomically."""
    ok, data = cv2.imencode(suffix, cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"cannot encode an image as {suffix!r}")
    return data.tobytes()


def read_rgb_tensor(path: str | os.PathLike, extra: object = None) -> torch.Tensor:
    """:func:`read_rgb` as an ``(H, W, 3)`` uint8 tensor (worker processes hand tensors over in
    shared memory); ``extra`` is ignored (the bulk path's loader signature)."""
    return torch.from_numpy(read_rgb(path))


def read_first_readable(
    read: Callable[[int], np.ndarray], index: int, count: int, skip: bool
) -> tuple[int, np.ndarray, list[str]]:
    """``(i, image, skipped)``: ``read(index)``, or with ``skip`` the first of the following
    items (wrapping around ``count``) that reads, each failure's message in ``skipped``."""
    skipped: list[str] = []
    for attempt in range(count if skip else 1):
        i = (index + attempt) % count
        try:
            return i, read(i), skipped
        except ImageReadError as e:
            if not skip:
                raise
            skipped.append(str(e))
    raise ImageReadError("every image of the dataset failed to load")


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


# -- what a predictor accepts as images --------------------------------------------------------
ImageInput = Union[str, os.PathLike, np.ndarray, torch.Tensor, Image.Image]  # noqa: UP007


def image_to_array(image: ImageInput) -> np.ndarray:
    """A path, an ``(H, W, 3)`` uint8 RGB array, a PIL image or a ``(3, H, W)`` tensor ->
    ``(H, W, 3)`` RGB array (arrays and tensors keep their dtype)."""
    if isinstance(image, str | os.PathLike):
        return read_rgb(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a (3, H, W) tensor, got shape {tuple(image.shape)}")
        return image.permute(1, 2, 0).cpu().numpy()
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB array, got shape {image.shape}")
        return image
    raise TypeError(
        f"cannot use a {type(image).__name__} as an image: pass a path, an (H, W, 3) uint8 RGB "
        "array, a PIL image or a (3, H, W) tensor"
    )


def image_to_tensor(image: ImageInput) -> torch.Tensor:
    """A path, an ``(H, W, 3)`` uint8 RGB array, a PIL image or a ``(3, H, W)`` tensor ->
    ``(3, H, W)`` tensor (tensors are returned as they are)."""
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a (3, H, W) tensor, got shape {tuple(image.shape)}")
        return image
    array = np.ascontiguousarray(image_to_array(image))
    if not array.flags.writeable:  # torch wants to own writable memory (no aliasing surprises)
        array = array.copy()
    return torch.from_numpy(array).permute(2, 0, 1)


def load_image_tensor(image: ImageInput, extra: object = None) -> torch.Tensor:
    """:func:`image_to_tensor` in the bulk path's loader signature (``extra`` is ignored):
    what the predictors' decoding workers hand over."""
    return image_to_tensor(image)


def as_image_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    """One image or several: a single path, PIL image, ``(H, W, 3)`` array or ``(3, H, W)``
    tensor becomes a list of one; an ``(N, H, W, 3)`` array or ``(N, 3, H, W)`` tensor a list of
    N; a sequence is listed as it is."""
    if isinstance(images, str | os.PathLike | Image.Image):
        return [images]
    if isinstance(images, np.ndarray | torch.Tensor):
        return list(images) if images.ndim == 4 else [images]
    return list(images)
