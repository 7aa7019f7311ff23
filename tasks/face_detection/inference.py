"""Running a face detector: the ``FaceDetector`` Python API."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from resvision.datasets.images import (
    ImageInput,
    as_image_list,
    load_image_tensor,
)
from resvision.heads.retinaface import RetinaFace
from resvision.tasks.engine.bulk import image_batches
from resvision.tasks.engine.runtime import autocast

from .model import load_model


class FaceDetector:
    """A trained RetinaFace on images of any size, batched.

    >>> run = "runs/face_detection/retinaface_r18_synthetic"
    >>> det = FaceDetector.from_checkpoint(run)  # doctest: +SKIP
    >>> faces = det.detect(["a.jpg", "b.jpg"])  # doctest: +SKIP
    >>> faces[0]["boxes"], faces[0]["scores"], faces[0]["landmarks"]  # (K, 4), (K,), (K, 5, 2)
    """

    def __init__(
        self, model: RetinaFace, *, device: str | torch.device = "cpu", amp: str = "off"
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.amp = amp

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, *, device: str = "auto", overrides: Sequence[str] = ()
    ) -> FaceDetector:
        """A run folder (its ``best.pt``, else ``last.pt``), a checkpoint file, or the PyTorch
        port's ``Resnet50_Final.pth``."""
        model, cfg, _ = load_model(path, device=device, overrides=overrides)
        return cls(model, device=next(model.parameters()).device, amp=cfg.runtime.amp)

    @torch.no_grad()
    def detect(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        batch_size: int = 8,
        score_threshold: float = 0.0,
        workers: int = 0,
    ) -> list[dict[str, np.ndarray]]:
        """Per image (a path, an RGB array, a PIL image or a tensor, or a list of them; any
        sizes): ``boxes (K, 4)`` float32 xyxy, ``scores (K,)`` and ``landmarks (K, 5, 2)`` (left
        eye, right eye, nose tip, left and right mouth corner) in the image's pixels, best
        first; an image without faces gives empty arrays. Images of different sizes in a batch
        are padded to a common size or run one pass per size (``model.test.pad_batches``);
        decoding and NMS run on the device. Files are read a few batches ahead, by ``workers``
        processes when given."""
        out = []
        for batch in image_batches(
            as_image_list(images), batch_size, load=load_image_tensor, workers=workers
        ):
            chunk = [t.to(self.device, non_blocking=True) for t in batch]
            with autocast(self.device, self.amp):
                results = self.model(chunk)
            for r in results:
                keep = r["scores"] >= score_threshold
                out.append(
                    {
                        "boxes": r["boxes"][keep].float().cpu().numpy(),
                        "scores": r["scores"][keep].float().cpu().numpy(),
                        "landmarks": r["landmarks"][keep].float().cpu().numpy(),
                    }
                )
        return out

    def predict(
        self, images: ImageInput | Sequence[ImageInput], *, batch_size: int = 8, **kwargs
    ) -> list[dict[str, np.ndarray]]:
        """The same as :meth:`detect` (the name every predictor shares)."""
        return self.detect(images, batch_size=batch_size, **kwargs)
