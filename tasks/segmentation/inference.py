"""Inference: whole image or sliding window, multi-scale + flip TTA, resize back, predictor API.

Logits are always resized back to the original image size before the argmax. The sliding window
batches its windows and averages logits where windows overlap; for large images the running sums
live on the CPU, so only a batch of windows is ever on the accelerator.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from resvision.datasets.images import (
    ImageInput,
    as_image_list,
    image_to_tensor,
    load_image_tensor,
)
from resvision.tasks.engine.bulk import image_batches
from resvision.tasks.engine.runtime import autocast

from .config import InferenceConfig
from .model import load_model

log = logging.getLogger(__name__)


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)["out"]


Progress = Callable[[Iterable, int], Iterable]  # (chunks, total) -> the chunks, reporting


def slide_logits(
    model: nn.Module, image: torch.Tensor, cfg: InferenceConfig, progress: Progress | None = None
) -> torch.Tensor:
    """``image: (1, 3, H, W)`` -> ``(1, K, H, W)`` logits averaged over overlapping windows.

    Windows follow MMSegmentation's grid: ``ceil((H - crop) / stride) + 1`` rows, the last one
    aligned to the bottom edge; a window larger than the image covers the whole image.
    ``progress`` wraps the batches of windows (e.g. a progress bar for very large images).
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
    step = max(1, cfg.window_batch)
    chunks = [boxes[i : i + step] for i in range(0, len(boxes), step)]
    for chunk in progress(chunks, len(chunks)) if progress else chunks:
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


def predict_logits(
    model: nn.Module, image: torch.Tensor, cfg: InferenceConfig, progress: Progress | None = None
) -> torch.Tensor:
    """``image: (N, 3, H, W)`` in [0, 255] -> ``(N, K, H, W)`` scores at the original size
    (``N = 1`` in sliding-window mode).

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
        if cfg.mode == "slide":
            out = slide_logits(model, x, cfg, progress)
        else:
            out = _logits(model, x).float()
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
        model, cfg, meta = load_model(path, device=device, overrides=overrides)
        return cls(
            model,
            meta["class_names"],
            device=next(model.parameters()).device,
            inference=inference or cfg.inference,
            amp=cfg.runtime.amp,
        )

    def settings_for(self, height: int, width: int) -> InferenceConfig:
        """The inference settings for an image: whole-image mode switches to sliding windows
        above ``max_whole_pixels`` (a whole pass would allocate memory for the whole image at
        every decoder level)."""
        cfg = self.inference
        limit = cfg.max_whole_pixels
        if cfg.mode == "whole" and limit and height * width > limit:
            log.warning(
                "%dx%d image: above inference.max_whole_pixels=%d, run as sliding windows of "
                "%s (stride %s)",
                width,
                height,
                limit,
                cfg.crop_size,
                cfg.stride,
            )
            return dataclasses.replace(cfg, mode="slide")
        return cfg

    @torch.no_grad()
    def predict_scores(
        self, image: ImageInput, *, progress: Progress | None = None
    ) -> torch.Tensor:
        """``(K, H, W)`` scores (logits, or averaged probabilities with TTA) at original size."""
        x = image_to_tensor(image).to(self.device)[None]
        cfg = self.settings_for(*x.shape[-2:])
        with autocast(self.device, self.amp):
            return predict_logits(self.model, x, cfg, progress)[0].float()

    @torch.no_grad()
    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        batch_size: int = 1,
        progress: Progress | None = None,
        workers: int = 0,
    ) -> list[np.ndarray]:
        """Label maps ``(H, W)`` uint8 at each image's original size (a path, an RGB array, a
        PIL image or a tensor, or a list of them). Consecutive images of one size go through
        the model ``batch_size`` at a time (whole-image mode). Files are read a few images
        ahead, by ``workers`` processes when given."""
        out: list[np.ndarray] = []
        run: list[torch.Tensor] = []  # consecutive images of one size, not yet run

        def flush() -> None:
            cfg = self.settings_for(*run[0].shape[-2:])
            if len(run) == 1 or cfg.mode != "whole":
                found = [self.predict_scores(t, progress=progress).argmax(0) for t in run]
            else:
                x = torch.stack(run).to(self.device)
                with autocast(self.device, self.amp):
                    found = list(predict_logits(self.model, x, cfg).float().argmax(1))
            out.extend(labels.to(torch.uint8).cpu().numpy() for labels in found)
            run.clear()

        for (tensor,) in image_batches(
            as_image_list(images), 1, load=load_image_tensor, workers=workers
        ):
            if run and (tensor.shape != run[0].shape or len(run) == batch_size):
                flush()
            run.append(tensor)
        if run:
            flush()
        return out
