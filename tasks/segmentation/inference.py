"""Inference: whole image or sliding window, multi-scale + flip TTA, resize back, predictor API.

Logits are always resized back to the original image size before the argmax. The sliding window
batches its windows and averages logits where windows overlap; for large images the running sums
live on the CPU, so only a batch of windows is ever on the accelerator.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from resvision.datasets.images import read_rgb


@dataclass
class InferenceConfig:
    """How a segmentation model is run at test time."""

    mode: Literal["whole", "slide"] = "whole"
    crop_size: tuple[int, int] = (512, 512)  # sliding window (height, width)
    stride: tuple[int, int] = (341, 341)  # sliding window step (height, width)
    window_batch: int = 4  # windows per forward pass
    test_size: tuple[int, int] | None = None  # fit images inside (long, short) first; None: as is
    scales: tuple[float, ...] = (1.0,)  # TTA scales (relative to test_size)
    flip: bool = False  # TTA horizontal flip
    cpu_accumulate_pixels: int = 4096 * 4096  # larger images accumulate window sums on the CPU


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)["out"]


def slide_logits(model: nn.Module, image: torch.Tensor, cfg: InferenceConfig) -> torch.Tensor:
    """``image: (1, 3, H, W)`` -> ``(1, K, H, W)`` logits averaged over overlapping windows.

    Windows follow MMSegmentation's grid: ``ceil((H - crop) / stride) + 1`` rows, the last one
    aligned to the bottom edge; a window larger than the image covers the whole image.
    """
    _, _, h, w = image.shape
    ch, cw = min(cfg.crop_size[0], h), min(cfg.crop_size[1], w)
    sh, sw = cfg.stride
    rows = max(math.ceil((h - ch) / sh), 0) + 1
    cols = max(math.ceil((w - cw) / sw), 0) + 1
    boxes = []
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * sh + ch, h), min(c * sw + cw, w)
            boxes.append((max(y2 - ch, 0), y2, max(x2 - cw, 0), x2))
    acc_device = torch.device("cpu") if h * w > cfg.cpu_accumulate_pixels else image.device
    total = count = None
    for i in range(0, len(boxes), max(1, cfg.window_batch)):
        chunk = boxes[i : i + cfg.window_batch]
        crops = torch.cat([image[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in chunk])
        out = _logits(model, crops).float().to(acc_device)
        if total is None:
            total = torch.zeros(1, out.shape[1], h, w, device=acc_device)
            count = torch.zeros(1, 1, h, w, device=acc_device)
        for k, (y1, y2, x1, x2) in enumerate(chunk):
            total[:, :, y1:y2, x1:x2] += out[k : k + 1]
            count[:, :, y1:y2, x1:x2] += 1
    return total / count


def fit_size(
    h: int, w: int, test_size: tuple[int, int] | None, scale: float = 1.0
) -> tuple[int, int]:
    """Size after fitting ``(h, w)`` inside ``(long, short)`` (keep ratio) and scaling."""
    factor = scale
    if test_size is not None:
        long, short = test_size
        factor *= min(long / max(h, w), short / min(h, w))
    return max(1, round(h * factor)), max(1, round(w * factor))


def predict_logits(model: nn.Module, image: torch.Tensor, cfg: InferenceConfig) -> torch.Tensor:
    """``image: (1, 3, H, W)`` in [0, 255] -> ``(1, K, H, W)`` scores at the original size.

    One pass returns logits; with several scales or flip, softmax probabilities are averaged.
    """
    _, _, h, w = image.shape
    passes = [(s, f) for s in cfg.scales for f in ((False, True) if cfg.flip else (False,))]
    result = None
    for scale, flip in passes:
        size = fit_size(h, w, cfg.test_size, scale)
        x = image.float()
        if size != (h, w):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if flip:
            x = x.flip(-1)
        out = slide_logits(model, x, cfg) if cfg.mode == "slide" else _logits(model, x).float()
        if flip:
            out = out.flip(-1)
        if tuple(out.shape[-2:]) != (h, w):
            out = F.interpolate(
                out.to(image.device), size=(h, w), mode="bilinear", align_corners=False
            )
        if len(passes) > 1:
            out = out.softmax(1)
        result = out if result is None else result + out.to(result.device)
    return result / len(passes) if len(passes) > 1 else result


ImageInput = str | os.PathLike | np.ndarray | torch.Tensor


def to_image_tensor(image: ImageInput) -> torch.Tensor:
    """A path, an ``(H, W, 3)`` uint8 RGB array or a ``(3, H, W)`` tensor -> ``(3, H, W)`` tensor."""
    if isinstance(image, str | os.PathLike):
        image = read_rgb(image)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB array, got shape {image.shape}")
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a (3, H, W) tensor, got shape {tuple(image.shape)}")
        return image
    raise TypeError(f"cannot read an image from {type(image).__name__}")


class Segmenter:
    """Run a trained segmentation model on images of any size.

    >>> seg = Segmenter.from_checkpoint("runs/segmentation/unet_r18_synthetic")  # doctest: +SKIP
    >>> masks = seg.predict(["a.jpg", "b.png"])  # list of (H, W) uint8 label maps
    """

    def __init__(
        self,
        model: nn.Module,
        class_names: Sequence[str],
        *,
        device: str | torch.device = "cpu",
        inference: InferenceConfig | None = None,
        amp: str = "off",
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.class_names = tuple(class_names)
        self.inference = inference or InferenceConfig()
        self.amp = amp

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        *,
        device: str = "auto",
        inference: InferenceConfig | None = None,
        overrides: Sequence[str] = (),
    ) -> Segmenter:
        """Load a run folder (its ``best.pt``, else ``last.pt``) or a checkpoint file."""
        from .task import SegmentationTask

        task = SegmentationTask()
        model, cfg, meta = task.load_for_inference(path, device=device, overrides=overrides)
        return cls(
            model,
            meta["class_names"],
            device=next(model.parameters()).device,
            inference=inference or cfg.inference,
            amp=cfg.runtime.amp,
        )

    @torch.no_grad()
    def predict_scores(self, image: ImageInput) -> torch.Tensor:
        """``(K, H, W)`` scores (logits, or averaged probabilities with TTA) at original size."""
        x = to_image_tensor(image).to(self.device)[None]
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            return predict_logits(self.model, x, self.inference)[0].float()

    def predict(self, images: ImageInput | Sequence[ImageInput]) -> list[np.ndarray]:
        """Label maps ``(H, W)`` uint8 at each image's original size."""
        if isinstance(images, str | os.PathLike | np.ndarray | torch.Tensor) and not (
            isinstance(images, torch.Tensor) and images.dim() == 4
        ):
            images = [images]
        return [self.predict_scores(img).argmax(0).to(torch.uint8).cpu().numpy() for img in images]


def save_label_png(labels: np.ndarray, path: str | Path, palette: np.ndarray) -> None:
    """A palette PNG whose pixel values are the class indices (readable as a VOC mask)."""
    from PIL import Image

    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette(palette[:256].reshape(-1).tolist())
    img.save(path)


def overlay(
    image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5
) -> np.ndarray:
    """Blend class colours over ``image`` (background, class 0, left as is)."""
    colours = palette[labels].astype(np.float32)
    out = image.astype(np.float32)
    fg = labels > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * colours[fg]
    return out.clip(0, 255).astype(np.uint8)
