"""ONNX export of a detector (dynamic batch, input size fixed at export; a Mask R-CNN's masks
pasted at the input size) and its check against PyTorch."""

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
from resvision.heads.detection.masks import expand_boxes, paste_masks
from resvision.tasks.engine.export import OnnxComparison, export_onnx

OUTPUTS = ("boxes", "scores", "labels", "num_detections")
MASK_OUTPUTS = (*OUTPUTS, "masks")


def output_names(model: FasterRCNN) -> tuple[str, ...]:
    return MASK_OUTPUTS if model.roi_heads.has_mask() else OUTPUTS


class ExportWrapper(nn.Module):
    """``images: (N, 3, H, W)`` float pixels in [0, 255] (H, W fixed at export; N dynamic) ->
    ``boxes (N, D, 4)`` xyxy in input pixels, ``scores (N, D)``, ``labels (N, D)`` (0 = empty
    slot), ``num_detections (N,)`` and, for Mask R-CNN, ``masks (N, D, H, W)`` probabilities
    pasted at the input size; the network sees the input resized as in PyTorch eval."""

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
        boxes = boxes * ratio
        if "masks" not in found:
            return boxes, scores, labels, valid.sum(1)
        n, d = boxes.shape[:2]
        m = found["masks"].shape[-1]
        masks = paste_masks(found["masks"].reshape(-1, m, m), boxes.reshape(-1, 4), *self.size)
        return boxes, scores, labels, valid.sum(1), masks.view(n, d, *self.size)


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
    names = output_names(model)
    contract = (
        f"images: float32 (N, 3, {size[0]}, {size[1]}) RGB pixels 0-255 (letterbox other sizes); "
        "boxes (N, D, 4) xyxy pixels, scores (N, D), labels (N, D) 1..K (0 = empty), "
        "num_detections (N,)"
    )
    if "masks" in names:
        contract += f", masks (N, D, {size[0]}, {size[1]}) probabilities (threshold 0.5)"
    metadata = {"contract": contract, "class_names": json.dumps(list(class_names))}
    return export_onnx(
        wrapper,
        torch.rand(2, 3, *size) * 255,
        path,
        input_names=["images"],
        output_names=names,
        dynamic_axes={name: {0: "batch"} for name in ("images", *names)},
        opset=opset,
        metadata=metadata,
    )


def check(model: FasterRCNN, path: str | Path, batches: Sequence[np.ndarray]) -> list[dict]:
    """onnxruntime vs PyTorch (the same batched path) on each ``(N, 3, H, W)`` batch: same
    number of detections, same labels, the largest box difference in pixels and, for masks,
    the largest mask probability difference (``max_mask_diff``) over the detections whose mask
    lands on the same pixels (a box coordinate within rounding of an integer can move a pasted
    mask by one pixel: those are counted in ``shifted_masks``)."""
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
        diffs, same_labels, mask_diffs, shifted = [0.0], True, [0.0], 0
        for i in range(batch.shape[0]):
            n = int(ref[3][i])
            if int(got[3][i]) != n:
                continue
            if n:
                diffs.append(float(np.abs(ref[0][i, :n] - got[0][i, :n]).max()))
                same_labels &= bool((ref[2][i, :n] == got[2][i, :n]).all())
            if len(ref) > 4 and n:
                scale = (2 * model.cfg.mask.output_size + 2) / (2 * model.cfg.mask.output_size)
                pixels = [
                    expand_boxes(torch.from_numpy(b[i, :n]).float(), scale).long()
                    for b in (ref[0], got[0])
                ]
                same = (pixels[0] == pixels[1]).all(1).numpy()
                shifted += int((~same).sum())
                if same.any():
                    mask_diffs.append(
                        float(np.abs(ref[4][i, :n][same] - got[4][i, :n][same]).max())
                    )
        rows.update(max_box_diff=max(diffs), same_labels=same_labels)
        if len(ref) > 4:
            rows.update(max_mask_diff=max(mask_diffs), shifted_masks=shifted)
        report.append(rows)
    return report
