"""Loading a state_dict into a backbone: key layouts, wrapping prefixes, the report.

Key layouts of torchvision, timm, InsightFace arcface_torch and OpenMMLab (``stem.*`` deep
stems) are detected and mapped; ``module.``/``_orig_mod.`` prefixes are stripped, a wrapping
prefix (``backbone.``, ``backbone.body.``, ``encoder.``, ...) is found by matching keys, and the
classifier and the stages that were not built are dropped (the backbone declares their key
prefixes).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from ..base import Backbone
from .sources import WeightsError, extract_state_dict, read_checkpoint, resolve_weights

log = logging.getLogger(__name__)

WRAPPER_PREFIXES = (
    "",
    "backbone.body.",
    "backbone.",
    "encoder.",
    "model.",
    "body.",
    "trunk.",
    "features.",
)
_MMCV_STEM = {"0": "conv1.0", "1": "conv1.1", "3": "conv1.3", "4": "conv1.4", "6": "conv1.6"}
_MMCV_STEM["7"] = "bn1"


@dataclass
class LoadReport:
    """What loading a checkpoint into a backbone did."""

    source: str
    layout: str
    prefix: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)


# -- mapping keys ------------------------------------------------------------------------------
def _strip(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def detect_layout(keys) -> str:
    """Name the key layout: ``arcface_torch``, ``openmmlab``, ``torchvision/timm`` or
    ``unknown``."""
    keys = list(keys)
    if any(k == "prelu.weight" or k.endswith(".prelu.weight") for k in keys):
        return "arcface_torch"
    if any(k.startswith("stem.") for k in keys):
        return "openmmlab"
    if any(k in ("conv1.weight", "conv1.0.weight") for k in keys):
        return "torchvision/timm"
    return "unknown"


def _map_layout(sd: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    if layout != "openmmlab":
        return sd
    out = {}
    for k, v in sd.items():
        if k.startswith("stem."):
            idx, _, rest = k[len("stem.") :].partition(".")
            k = f"{_MMCV_STEM.get(idx, 'stem.' + idx)}.{rest}"
        out[k] = v
    return out


def _unwrap_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for wrapper in ("module.", "_orig_mod."):
        while sd and all(k.startswith(wrapper) for k in sd):
            sd = _strip(sd, wrapper)
        sd = {(k[len(wrapper) :] if k.startswith(wrapper) else k): v for k, v in sd.items()}
    return sd


def _listing(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_backbone_weights(
    model: Backbone,
    weights: str | os.PathLike | Mapping[str, torch.Tensor],
    *,
    strict: bool = True,
) -> LoadReport:
    """Load ``weights`` (path, tag or state_dict) into ``model`` and return what happened.

    Missing or unexpected keys raise :class:`WeightsError` listing them; with ``strict=False``
    they are logged. Sets ``model.normalization`` from the tag when one is given.
    """
    normalization = None
    if isinstance(weights, Mapping):
        source, raw = "state_dict", dict(weights)
    else:
        path, normalization = resolve_weights(getattr(model, "arch", type(model).__name__), weights)
        source, raw = str(path), read_checkpoint(path)
    sd = _unwrap_prefixes(extract_state_dict(raw, source=source))
    expected = model.state_dict()

    # Choose the wrapping prefix under which most keys land in the model.
    best = None
    for prefix in WRAPPER_PREFIXES:
        sub = _strip(sd, prefix)
        layout = detect_layout(sub)
        mapped = _map_layout(sub, layout)
        hits = sum(k in expected for k in mapped)
        if best is None or hits > best[0]:
            best = (hits, prefix, layout, mapped)
    hits, prefix, layout, mapped = best
    if hits == 0:
        raise WeightsError(
            f"no key of {source} matches {type(model).__name__} ({getattr(model, 'arch', '')}): "
            f"checkpoint keys look like {_listing(sorted(sd), 6)}; expected keys like "
            f"{_listing(sorted(expected), 6)}"
        )
    report = LoadReport(source=source, layout=layout, prefix=prefix)
    outside = [k for k in sd if not k.startswith(prefix)]
    ignored = model.ignored_keys()
    to_load: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    for k, v in mapped.items():
        if k not in expected:
            if k.startswith(ignored):
                report.dropped.append(k)
            else:
                report.unexpected.append(k)
            continue
        target = expected[k]
        if v.shape != target.shape:
            if k == model.first_conv and v.dim() == 4 and v.shape[1] == 3:
                v = adapt_input_conv(v, target.shape[1])
                report.adapted.append(k)
            if v.shape != target.shape:
                mismatched.append(
                    f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target.shape)}"
                )
                continue
        to_load[k] = v.to(dtype=target.dtype)
    report.missing = [
        k for k in expected if k not in to_load and not k.endswith("num_batches_tracked")
    ]
    if mismatched:
        raise WeightsError(
            f"{source} does not fit {getattr(model, 'arch', type(model).__name__)}: shapes "
            f"differ for {_listing(mismatched, 6)}. Is it the weights of another architecture?"
        )
    problems = []
    if report.missing:
        problems.append(f"missing keys: {_listing(report.missing)}")
    if report.unexpected:
        problems.append(f"unexpected keys: {_listing(report.unexpected)}")
    if problems and strict:
        raise WeightsError(
            f"{source} ({layout} layout, prefix {prefix!r}) does not match "
            f"{getattr(model, 'arch', type(model).__name__)}: {'; '.join(problems)}. "
            "Pass strict=False to load the keys that match."
        )
    for problem in problems:
        log.warning("%s: %s", source, problem)
    if outside:
        log.info("%s: ignored %d keys outside prefix %r", source, len(outside), prefix)
    model.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    if normalization is not None:
        model.normalization = normalization.adapted(model.in_channels)
    return report


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt RGB conv weights ``(O, 3, k, k)`` to ``in_channels`` inputs.

    One channel sums the RGB filters (a grey image gives the same response as the RGB image
    with equal channels); more channels tile RGB and rescale by ``3 / in_channels`` so the
    activation scale is kept.
    """
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-in_channels // weight.shape[1])
    return weight.repeat(1, reps, 1, 1)[:, :in_channels] * (weight.shape[1] / in_channels)
