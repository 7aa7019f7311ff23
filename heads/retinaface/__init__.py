"""RetinaFace: FPN + SSH context modules + class / box / five-landmark heads on any registry
backbone (:mod:`.model`), its priors and encoding (:mod:`.box_coder`), the batched multibox
loss (:mod:`.loss`); configs in :mod:`.config` (no torch import there)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # _EXPORTS' names, for editors, type checkers and grep
    from .box_coder import make_priors as make_priors
    from .config import MultiboxLossConfig as MultiboxLossConfig
    from .config import PriorConfig as PriorConfig
    from .config import RetinaFaceConfig as RetinaFaceConfig
    from .config import RetinaFaceTestConfig as RetinaFaceTestConfig
    from .loss import multibox_loss as multibox_loss
    from .model import SSH as SSH
    from .model import RetinaFace as RetinaFace
    from .model import RetinaFaceFPN as RetinaFaceFPN
    from .model import postprocess as postprocess

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
