"""ONNX export of a detector (dynamic batch, input size fixed at export) and its check."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from resvision.heads.detection import FasterRCNN
from resvision.tasks.engine.export import OnnxComparison, export_onnx

OUTPUTS = ("boxes", "scores", "labels", "num_detections")


class ExportWrapper(nn.Module):
    """``images: (N, 3, H, W)`` float pixels in [0, 255] (H, W fixed at export; N dynamic) ->
    ``boxes (N, D, 4)`` xyxy in input pixels, ``scores (N, D)``, ``labels (N, D)`` (0 = empty
    slot), ``num_detections (N,)``; the network sees the input resized as in PyTorch eval."""

    def __init__(self, model: FasterRCNN, size: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        h, w = size
        scale = min(model.transform.min_size[-1] / min(h, w), model.transform.max_size / max(h, w))
        self.resized = (int(h * scale), int(w * scale))
        div = model.transform.size_divisible
        self.padded = (-(-self.resized[0] // div) * div, -(-self.resized[1] // div) * div)
        self.size = size

    def forward(self, images: torch.Tensor):
        x = self.model.normalization.normalize(images)
        x = F.interpolate(x, size=self.resized, mode="bilinear", align_corners=False)
        x = F.pad(x, (0, self.padded[1] - self.resized[1], 0, self.padded[0] - self.resized[0]))
        sizes = torch.tensor([self.resized], dtype=torch.int64).expand(x.shape[0], 2)
        found = self.model.detect(x, sizes)
        boxes, scores, labels, valid = (found[k] for k in ("boxes", "scores", "labels", "valid"))
        ratio = torch.tensor(
            [self.size[1] / self.resized[1], self.size[0] / self.resized[0]] * 2, dtype=boxes.dtype
        )
        return boxes * ratio, scores, labels, valid.sum(1)


def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Resize keeping the aspect ratio to fit ``size`` and pad (bottom/right) with black."""
    h, w = image.shape[:2]
    scale = min(size[0] / h, size[1] / w)
    resized = cv2.resize(
        image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR
    )
    out = np.zeros((*size, 3), np.uint8)
    out[: resized.shape[0], : resized.shape[1]] = resized
    return out, scale


def export(
    model: FasterRCNN,
    path: str | Path,
    size: tuple[int, int],
    opset: int = 17,
    class_names: Sequence[str] = (),
) -> Path:
    """Export for inputs of ``size`` (H, W) with a dynamic batch dimension; the class names
    (label k is ``class_names[k - 1]``) and the input contract go into the model's metadata."""
    wrapper = ExportWrapper(model.float().cpu(), size).eval()
    contract = (
        f"images: float32 (N, 3, {size[0]}, {size[1]}) RGB pixels 0-255 (letterbox other sizes); "
        "boxes (N, D, 4) xyxy pixels, scores (N, D), labels (N, D) 1..K (0 = empty), "
        "num_detections (N,)"
    )
    metadata = {"contract": contract, "class_names": json.dumps(list(class_names))}
    return export_onnx(
        wrapper,
        torch.rand(2, 3, *size) * 255,
        path,
        input_names=["images"],
        output_names=OUTPUTS,
        dynamic_axes={name: {0: "batch"} for name in ("images", *OUTPUTS)},
        opset=opset,
        metadata=metadata,
    )


def check(model: FasterRCNN, path: str | Path, batches: Sequence[np.ndarray]) -> list[dict]:
    """onnxruntime vs PyTorch (the same batched path) on each ``(N, 3, H, W)`` batch: same
    number of detections, same labels, and the largest box difference in pixels."""
    size = tuple(batches[0].shape[-2:])
    compare = OnnxComparison(ExportWrapper(model.float().cpu(), size), path)
    report = []
    for batch in batches:
        ref, got = compare.run(batch)
        rows = {
            "batch": batch.shape[0],
            "detections": int(ref[3].sum()),
            "same_count": bool((ref[3] == got[3]).all()),
        }
        diffs, same_labels = [0.0], True
        for i in range(batch.shape[0]):
            n = int(ref[3][i])
            if int(got[3][i]) != n:
                continue
            if n:
                diffs.append(float(np.abs(ref[0][i, :n] - got[0][i, :n]).max()))
                same_labels &= bool((ref[2][i, :n] == got[2][i, :n]).all())
        rows.update(max_box_diff=max(diffs), same_labels=same_labels)
        report.append(rows)
    return report
