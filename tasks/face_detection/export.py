"""ONNX export of a face detector (dynamic batch, height and width) and its check."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from resvision.heads.retinaface import RetinaFace
from resvision.tasks.engine.export import OnnxComparison, export_onnx

OUTPUTS = ("boxes", "scores", "landmarks", "num_detections")
CONTRACT = (
    "images: float32 (N, 3, H, W) RGB pixels 0-255, any H and W; boxes (N, D, 4) xyxy pixels, "
    "scores (N, D), landmarks (N, D, 5, 2) pixels (left eye, right eye, nose, left and right "
    "mouth corner), num_detections (N,): the first num_detections rows of each image are its "
    "faces, best first"
)


class ExportWrapper(nn.Module):
    """``images (N, 3, H, W)`` float RGB pixels -> ``boxes (N, D, 4)``, ``scores (N, D)``,
    ``landmarks (N, D, 5, 2)`` and ``num_detections (N,)`` with ``D = test.max_detections``
    (the images of a batch share their size; no test-time resize)."""

    def __init__(self, model: RetinaFace) -> None:
        super().__init__()
        self.model = model
        t = model.cfg.test
        if t.max_detections > t.pre_nms_top_k:
            raise ValueError(
                f"model.test.max_detections={t.max_detections} exceeds pre_nms_top_k="
                f"{t.pre_nms_top_k}: the exported graph keeps at most pre_nms_top_k faces"
            )

    def forward(self, images: torch.Tensor):
        x = self.model.normalize(images)
        boxes, scores, landmarks, valid = self.model.detect(x, None, fixed_shape=True)
        return boxes, scores, landmarks, valid.long().sum(1)


def export(model: RetinaFace, path: str | Path, *, opset: int = 17) -> Path:
    """Export with dynamic batch, height and width; the input contract goes into the model's
    metadata."""
    wrapper = ExportWrapper(model.float().cpu()).eval()
    axes = {"images": {0: "batch", 2: "height", 3: "width"}}
    axes |= {name: {0: "batch"} for name in OUTPUTS}
    return export_onnx(
        wrapper,
        torch.rand(2, 3, 96, 128) * 255,
        path,
        input_names=["images"],
        output_names=OUTPUTS,
        dynamic_axes=axes,
        opset=opset,
        metadata={"contract": CONTRACT},
    )


def check(model: RetinaFace, path: str | Path, batches: Sequence[np.ndarray]) -> list[dict]:
    """onnxruntime vs PyTorch (the same wrapper) on each ``(N, 3, H, W)`` batch: the same
    number of faces per image, and the largest score, box and landmark differences."""
    compare = OnnxComparison(ExportWrapper(model.float().cpu()), path)
    report = []
    for batch in batches:
        ref, got = compare.run(batch)
        same = bool((ref[3] == got[3]).all())
        diffs = {"score": [0.0], "box": [0.0], "landmark": [0.0]}
        for i in range(batch.shape[0]):
            n = int(ref[3][i])
            if not same or not n:
                continue
            diffs["score"].append(float(np.abs(ref[1][i, :n] - got[1][i, :n]).max()))
            diffs["box"].append(float(np.abs(ref[0][i, :n] - got[0][i, :n]).max()))
            diffs["landmark"].append(float(np.abs(ref[2][i, :n] - got[2][i, :n]).max()))
        report.append(
            {
                "shape": tuple(batch.shape),
                "faces": int(ref[3].sum()),
                "same_count": same,
                "max_score_diff": max(diffs["score"]),
                "max_box_diff": max(diffs["box"]),
                "max_landmark_diff": max(diffs["landmark"]),
            }
        )
    return report
