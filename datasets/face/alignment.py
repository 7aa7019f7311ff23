"""Face alignment: InsightFace's ``norm_crop`` and the landmark files it reads.

A least-squares similarity transform (Umeyama) maps 5 landmarks (left eye, right eye, nose tip,
left and right mouth corners) to the ArcFace template (SphereFace's 96x112 template shifted by
+8 px in x), then a bilinear warp with a black border; sizes that are multiples of 112 scale the
template, multiples of 128 scale the 112 template by size/128 and shift it by 8 * size/128. One
code path serves training data preparation, evaluation and inference.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import cv2
import numpy as np
import torch

from ..images import ImageReadError

SPHEREFACE_96x112 = np.array(
    [
        [30.2946, 51.6963],
        [65.5318, 51.5014],
        [48.0252, 71.7366],
        [33.5493, 92.3655],
        [62.7299, 92.2041],
    ],
    np.float32,
)
ARCFACE_TEMPLATE = SPHEREFACE_96x112 + np.array([8.0, 0.0], np.float32)  # the 112x112 template


# -- alignment -------------------------------------------------------------------------------
def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` to
    ``dst`` (Umeyama 1991), as a 3x3 matrix."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    n, dim = src.shape
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / n
    d = np.ones(dim)
    if np.linalg.det(cov) < 0:
        d[-1] = -1
    u, s, vt = np.linalg.svd(cov)
    t = np.eye(dim + 1)
    rank = np.linalg.matrix_rank(cov)
    if rank == 0:
        raise ValueError("landmarks are all at one point: no similarity transform exists")
    if rank == dim - 1 and np.linalg.det(u) * np.linalg.det(vt) <= 0:
        keep = d[-1]
        d[-1] = -1
        t[:dim, :dim] = u @ np.diag(d) @ vt
        d[-1] = keep
    else:
        t[:dim, :dim] = u @ np.diag(d) @ vt
    scale = (s @ d) / src_c.var(0).sum()
    t[:dim, dim] = dst_mean - scale * (t[:dim, :dim] @ src_mean)
    t[:dim, :dim] *= scale
    return t


def template_for(image_size: int) -> np.ndarray:
    """The ArcFace template for a square crop of ``image_size`` (a multiple of 112 or 128)."""
    if image_size % 112 == 0:
        ratio, shift = image_size / 112.0, 0.0
    elif image_size % 128 == 0:
        ratio = image_size / 128.0
        shift = 8.0 * ratio
    else:
        raise ValueError(f"aligned crops are multiples of 112 or 128 pixels, got {image_size}")
    dst = ARCFACE_TEMPLATE * ratio
    dst[:, 0] += shift
    return dst


def estimate_norm(landmarks: np.ndarray, image_size: int = 112) -> np.ndarray:
    """The 2x3 affine matrix that aligns 5 ``landmarks`` (x, y) to the template."""
    landmarks = np.asarray(landmarks, np.float32)
    if landmarks.shape != (5, 2):
        raise ValueError(f"alignment needs 5 (x, y) landmarks, got shape {landmarks.shape}")
    return similarity_transform(landmarks, template_for(image_size))[:2]


def norm_crop(image: np.ndarray, landmarks: np.ndarray, image_size: int = 112) -> np.ndarray:
    """The aligned ``image_size`` square crop (bilinear, black border), InsightFace's norm_crop."""
    matrix = estimate_norm(landmarks, image_size)
    return cv2.warpAffine(image, matrix, (image_size, image_size), borderValue=0.0)


def align_crop(image: np.ndarray, landmarks: np.ndarray, image_size: int) -> np.ndarray:
    """The aligned ``image_size`` square crop: :func:`norm_crop` at ``image_size`` when it is a
    multiple of 112, else at 112 px and then resized (training, evaluation and inference)."""
    align = 112 if image_size % 112 else image_size
    return resize_square(norm_crop(image, landmarks, align), image_size)


def read_landmarks(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Landmarks per image from JSON (``{"name.jpg": [[x, y] x 5]}``) or CSV
    (``name,x1,y1,...,x5,y5``), keyed by the file name relative to the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"landmark file {str(path)!r} does not exist")
    out: dict[str, np.ndarray] = {}
    if path.suffix.lower() == ".json":
        for name, pts in json.loads(path.read_text()).items():
            out[name] = np.asarray(pts, np.float32).reshape(5, 2)
    else:
        for row in csv.reader(path.read_text().splitlines()):
            if not row or row[0].startswith("#") or row[0] in ("name", "file", "image"):
                continue
            if len(row) != 11:
                raise ValueError(
                    f"{str(path)!r}: a landmark row needs a name and 10 numbers, got {row}"
                )
            out[row[0]] = np.asarray([float(v) for v in row[1:]], np.float32).reshape(5, 2)
    return out


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` resized to ``size`` x ``size`` (area interpolation when shrinking)."""
    if image.shape[:2] == (size, size):
        return image
    return cv2.resize(
        image,
        (size, size),
        interpolation=cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR,
    )


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` array -> ``(3, H, W)`` tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
