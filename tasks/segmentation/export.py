"""ONNX export of a segmentation model (dynamic batch, height and width) and its check."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from resvision.tasks.engine.export import OnnxComparison, export_onnx


class ExportWrapper(nn.Module):
    """``images: (N, 3, H, W)`` float in [0, 255] -> ``logits: (N, K, H, W)`` (any N, H, W)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)["out"]


INPUT_CONTRACT = (
    "images: float32 (N, 3, H, W) RGB pixels 0-255, any N, H, W; logits: float32 (N, K, H, W), "
    "class = argmax over K"
)


def export(
    model: nn.Module,
    path: str | Path,
    *,
    size: tuple[int, int] = (256, 320),
    opset: int = 17,
    class_names: Sequence[str] = (),
) -> Path:
    """Export with dynamic batch, height and width (traced at ``size``); the class names and
    the input contract go into the model's metadata."""
    wrapper = ExportWrapper(model.float().cpu()).eval()
    example = torch.rand(2, 3, *size) * 255
    metadata = {"contract": INPUT_CONTRACT, "class_names": json.dumps(list(class_names))}
    return export_onnx(
        wrapper,
        example,
        path,
        input_names=["images"],
        output_names=["logits"],
        dynamic_axes={
            "images": {0: "batch", 2: "height", 3: "width"},
            "logits": {0: "batch", 2: "height", 3: "width"},
        },
        opset=opset,
        metadata=metadata,
    )


def check(model: nn.Module, path: str | Path, images: Sequence[np.ndarray]) -> list[dict]:
    """onnxruntime vs PyTorch on each ``(H, W, 3)`` image (each its own size, as a batch of 2):
    the largest logit difference and the share of pixels with the same label."""
    compare = OnnxComparison(ExportWrapper(model.eval().float().cpu()), path)
    results = []
    for img in images:
        x = np.stack([img.transpose(2, 0, 1)] * 2).astype(np.float32)
        (ref,), (got,) = compare.run(x)
        results.append(
            {
                "shape": tuple(x.shape),
                "max_abs_diff": float(np.abs(got - ref).max()),
                "label_agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
            }
        )
    return results
