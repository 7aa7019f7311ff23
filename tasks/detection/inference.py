"""Running a detector: test-time augmentation and the ``Detector`` Python API."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import batched_nms

from resvision.datasets.images import read_rgb
from resvision.heads.detection import FasterRCNN

ImageInput = str | os.PathLike | np.ndarray | Tensor


def to_chw(image: ImageInput) -> Tensor:
    """A path, an ``(H, W, 3)`` uint8 RGB array or a ``(3, H, W)`` tensor -> ``(3, H, W)``."""
    if isinstance(image, str | os.PathLike):
        image = read_rgb(image)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB array, got shape {image.shape}")
        array = np.ascontiguousarray(image)
        if not array.flags.writeable:  # torch wants to own writable memory (no aliasing surprises)
            array = array.copy()
        return torch.from_numpy(array).permute(2, 0, 1)
    if isinstance(image, Tensor) and image.dim() == 3 and image.shape[0] == 3:
        return image
    raise ValueError(f"cannot use {type(image).__name__} {getattr(image, 'shape', '')} as an image")


@torch.no_grad()
def detect_images(
    model: FasterRCNN,
    images: list[Tensor],
    *,
    tta: bool = False,
    tta_sizes: Sequence[int] = (640, 800, 960),
) -> list[dict[str, Tensor]]:
    """Detections per image in original coordinates; with ``tta``, every size in ``tta_sizes``
    and its horizontal flip are run and their detections merged by class-aware NMS."""
    if not tta:
        return model(images)
    transform = model.transform
    saved = transform.min_size
    runs: list[list[dict[str, Tensor]]] = []
    try:
        for size in tta_sizes:
            transform.min_size = (size,)
            runs.append(model(images))
            flipped = model([img.flip(-1) for img in images])
            for img, r in zip(images, flipped):
                w = img.shape[-1]
                b = r["boxes"].clone()
                b[:, 0], b[:, 2] = w - r["boxes"][:, 2], w - r["boxes"][:, 0]
                r["boxes"] = b
            runs.append(flipped)
    finally:
        transform.min_size = saved
    merged = []
    for i in range(len(images)):
        boxes = torch.cat([r[i]["boxes"] for r in runs])
        scores = torch.cat([r[i]["scores"] for r in runs])
        labels = torch.cat([r[i]["labels"] for r in runs])
        keep = batched_nms(boxes, scores, labels, model.cfg.nms_thresh)[
            : model.cfg.detections_per_img
        ]
        merged.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
    return merged


class Detector:
    """A trained detector on images of any size.

    >>> det = Detector.from_checkpoint("runs/detection/faster_rcnn_r18_fpn_synthetic")  # doctest: +SKIP
    >>> det.predict(["a.jpg"])[0]["boxes"]   # (K, 4) xyxy in the image's pixels
    """

    def __init__(
        self,
        model: FasterRCNN,
        class_names: Sequence[str],
        *,
        device: str | torch.device = "cpu",
        amp: str = "off",
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.class_names = tuple(class_names)
        self.amp = amp

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, *, device: str = "auto", overrides: Sequence[str] = ()
    ) -> Detector:
        """A run folder (its ``best.pt``, else ``last.pt``) or a checkpoint file."""
        from .task import DetectionTask

        model, cfg, meta = DetectionTask().load_for_inference(
            Path(path), device=device, overrides=overrides
        )
        return cls(
            model, meta["class_names"], device=next(model.parameters()).device, amp=cfg.runtime.amp
        )

    @torch.no_grad()
    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        batch_size: int = 4,
        score_threshold: float = 0.0,
        tta: bool = False,
    ) -> list[dict]:
        """Per image: ``boxes`` (K, 4) float xyxy, ``scores`` (K,), ``labels`` (K,) in 1..num_classes
        and ``class_names`` (K,), as numpy arrays, sorted by score."""
        if isinstance(images, str | os.PathLike | np.ndarray) or (
            isinstance(images, Tensor) and images.dim() == 3
        ):
            images = [images]
        tensors = [to_chw(img) for img in images]
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp)
        out = []
        for start in range(0, len(tensors), batch_size):
            chunk = [t.to(self.device) for t in tensors[start : start + batch_size]]
            with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                results = detect_images(self.model, chunk, tta=tta)
            for r in results:
                keep = r["scores"] >= score_threshold
                labels = r["labels"][keep].cpu().numpy()
                out.append(
                    {
                        "boxes": r["boxes"][keep].float().cpu().numpy(),
                        "scores": r["scores"][keep].float().cpu().numpy(),
                        "labels": labels,
                        "class_names": np.array(
                            [self.class_names[k - 1] for k in labels], dtype=object
                        ),
                    }
                )
        return out
