"""ONNX export and the onnxruntime comparison every task shares.

A task supplies a wrapper module (the exported contract: pixels in, plain tensors out) and its
own comparison of the outputs; writing the file, silencing the tracer's expected warnings and
running both PyTorch and onnxruntime on the same inputs happen here, once.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn


def export_onnx(
    wrapper: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]],
    opset: int = 17,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Trace ``wrapper`` on ``example`` and write the ONNX model to ``path`` atomically (a
    temporary file renamed at the end: an interrupted export never leaves a broken file).
    ``metadata`` (class names, the input contract, ...) is stored in the model's
    ``metadata_props``, where onnxruntime's ``get_modelmeta()`` reads it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with warnings.catch_warnings():
            # shape checks traced as constants are expected: the check runs other shapes
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            torch.onnx.export(
                wrapper.eval(),
                (example,),
                str(tmp),
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                dynamo=False,
            )
        if metadata:
            import onnx

            model = onnx.load(str(tmp))
            for key, value in metadata.items():
                model.metadata_props.add(key=key, value=value)
            onnx.save(model, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class OnnxComparison:
    """Runs an exported model with onnxruntime (CPU) next to its PyTorch wrapper."""

    def __init__(self, wrapper: nn.Module, path: str | Path) -> None:
        import onnxruntime as ort

        self.wrapper = wrapper.eval()
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def run(self, inputs: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """``(pytorch outputs, onnxruntime outputs)`` for one float32 input batch."""
        x = np.ascontiguousarray(inputs, np.float32)
        with torch.no_grad():
            ref = self.wrapper(torch.from_numpy(x))
        ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
        got = self.session.run(None, {self.input_name: x})
        return [t.numpy() for t in ref], got
