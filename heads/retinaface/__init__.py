"""RetinaFace: FPN + SSH context modules + class / box / five-landmark heads on any registry
backbone (:mod:`.model`), its priors and encoding (:mod:`.box_coder`), the batched multibox
loss (:mod:`.loss`); configs in :mod:`.config` (no torch import there)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MultiboxLossConfig": "config",
    "PriorConfig": "config",
    "RetinaFaceConfig": "config",
    "RetinaFaceTestConfig": "config",
    "make_priors": "box_coder",
    "multibox_loss": "loss",
    "RetinaFace": "model",
    "SSH": "model",
    "RetinaFaceFPN": "model",
    "postprocess": "model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
