"""Per-stage gradient norms (``runtime.log_grad_norms``): vanishing or exploding gradients,
seen in any task's own run.

The backbone is found inside the model (the first :class:`~resvision.backbones.Backbone`
submodule); its stages are the ones it declares (``stem``, ``c2``..``c5``). Everything outside
the backbone (necks, heads) is one more group, ``head``. Frozen stages (no trainable parameter)
are left out. The norms are L2 over the gradients of each group's parameters, measured after
the backward pass and AMP unscaling, before gradient clipping.
"""

from __future__ import annotations

import torch
from torch import nn

from resvision.backbones import Backbone
from resvision.backbones.base import STAGES


def find_backbone(model: nn.Module) -> Backbone | None:
    """The first :class:`Backbone` inside ``model`` (DDP-wrapped or not), or None."""
    return next((m for m in model.modules() if isinstance(m, Backbone)), None)


def _total_norm(grads: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    if not grads:
        return torch.zeros((), device=device)
    norms = torch._foreach_norm(grads)  # one fused pass, as clip_grad_norm_ does
    return torch.linalg.vector_norm(torch.stack([n.float() for n in norms]))


def stage_grad_norms(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{"grad_norm/stem": ..., "grad_norm/c2": ..., "grad_norm/head": ...,
    "grad_norm/total": ...}``: 0-dim tensors on the gradients' device (no host sync here; the
    metrics logger converts them when it writes a record)."""
    groups: dict[str, list[nn.Parameter]] = {}
    in_backbone: set[int] = set()
    backbone = find_backbone(model)
    if backbone is not None:
        for stage, modules in zip(STAGES, backbone.stage_modules()):
            params = [p for m in modules for p in m.parameters()]
            in_backbone |= {id(p) for p in params}
            if any(p.requires_grad for p in params):
                groups[stage] = params
    groups["head"] = [p for p in model.parameters() if id(p) not in in_backbone]
    device = next(model.parameters()).device
    out, squares = {}, []
    for name, params in groups.items():
        norm = _total_norm([p.grad.detach() for p in params if p.grad is not None], device)
        out[f"grad_norm/{name}"] = norm
        squares.append(norm.square())
    out["grad_norm/total"] = torch.stack(squares).sum().sqrt()
    return out
