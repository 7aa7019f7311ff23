"""Running a detector: test-time augmentation and the ``Detector`` Python API."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import batched_nms

from resvision.datasets.images import (
    ImageInput,
    as_image_list,
    load_image_tensor,
)
from resvision.heads.detection import FasterRCNN
from resvision.tasks.engine.bulk import image_batches
from resvision.tasks.engine.runtime import autocast

from .model import load_model


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
        roi = model.cfg.roi_heads
        keep = batched_nms(boxes, scores, labels, roi.nms_thresh)[: roi.detections_per_img]
        merged.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
    return merged


class Detector:
    """A trained detector on images of any size.

    >>> run = "runs/detection/faster_rcnn_r18_fpn_synthetic"
    >>> det = Detector.from_checkpoint(run)  # doctest: +SKIP
    >>> det.predict(["a.jpg"])[0]["boxes"]   # (K, 4) xyxy in the image's pixels
    """

    def __init__(
        self,
        model: FasterRCNN,
        class_names: Sequence[str],
        *,
        device: str | torch.device = "cpu",
        amp: str = "off",
        category_ids: Sequence[int] | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.class_names = tuple(class_names)
        # the data's own category id of each label (COCO results name categories by it)
        self.category_ids = tuple(category_ids or range(1, len(self.class_names) + 1))
        self.amp = amp

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, *, device: str = "auto", overrides: Sequence[str] = ()
    ) -> Detector:
        """A run folder (its ``best.pt``, else ``last.pt``) or a checkpoint file."""
        model, cfg, meta = load_model(path, device=device, overrides=overrides)
        return cls(
            model,
            meta["class_names"],
            device=next(model.parameters()).device,
            amp=cfg.runtime.amp,
            category_ids=meta.get("category_ids"),
        )

    @torch.no_grad()
    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        batch_size: int = 4,
        score_threshold: float = 0.0,
        tta: bool = False,
        workers: int = 0,
    ) -> list[dict]:
        """Per image (a path, an RGB array, a PIL image or a tensor, or a list of them):
        ``boxes`` (K, 4) float xyxy, ``scores`` (K,), ``labels`` (K,) in 1..num_classes and
        ``class_names`` (K,), as numpy arrays, sorted by score. Files are read a few batches
        ahead, by ``workers`` processes when given."""
        out = []
        for batch in image_batches(
            as_image_list(images), batch_size, load=load_image_tensor, workers=workers
        ):
            chunk = [t.to(self.device, non_blocking=True) for t in batch]
            with autocast(self.device, self.amp):
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
