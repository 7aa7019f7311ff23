"""ONNX export of the embedding model (dynamic batch) and its check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from resvision.heads.embedding import EmbeddingModel
from resvision.tasks.engine.export import OnnxComparison, export_onnx


class ExportWrapper(nn.Module):
    """``images (N, 3, S, S)`` float pixels 0-255 RGB, aligned -> unit-length embeddings
    ``(N, D)``."""

    def __init__(self, model: EmbeddingModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.model(images), dim=1)


def export(model: EmbeddingModel, path: str | Path, *, size: int, opset: int = 17) -> Path:
    """Export for ``size`` x ``size`` crops with a dynamic batch dimension; the input contract
    goes into the model's metadata."""
    contract = (
        f"images: float32 (N, 3, {size}, {size}) RGB pixels 0-255, aligned with norm_crop; "
        "embeddings: float32 (N, D) unit length (cosine = dot product)"
    )
    return export_onnx(
        ExportWrapper(model.float().cpu()).eval(),
        torch.rand(2, 3, size, size) * 255,
        path,
        input_names=["images"],
        output_names=["embeddings"],
        dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}},
        opset=opset,
        metadata={"contract": contract},
    )


def check(model: EmbeddingModel, path: str | Path, *, size: int) -> list[dict]:
    """onnxruntime vs PyTorch on random batches of 1 and 5: the largest difference."""
    compare = OnnxComparison(ExportWrapper(model.float().cpu()), path)
    report = []
    for n in (1, 5):
        x = (np.random.default_rng(n).random((n, 3, size, size)) * 255).astype(np.float32)
        (ref,), (got,) = compare.run(x)
        report.append({"batch": n, "max_abs_diff": float(np.abs(ref - got).max())})
    return report
