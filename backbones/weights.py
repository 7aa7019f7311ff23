"""Loading backbone weights from local files and from the ecosystem's caches.

``weights=`` is either a path (``.pth``/``.pt``/``.bin``/``.ckpt`` read with
``torch.load(weights_only=True)``, or ``.safetensors``) or a named tag:

- ``"torchvision:IMAGENET1K_V2"``: torchvision's weights enum for the architecture, read from
  ``$TORCH_HOME/hub/checkpoints``;
- ``"timm:a1_in1k"`` (or ``"timm"`` for timm's default tag): timm's pretrained config, read
  from the Hugging Face cache (or the torch hub cache for URL-only weights).

A file that is not cached is downloaded unless ``RESVISION_OFFLINE``/``HF_HUB_OFFLINE`` is set;
when that fails, the error names the file, where to put it and the URL it comes from.

Key layouts of torchvision, timm, InsightFace arcface_torch and OpenMMLab (``stem.*`` deep
stems) are detected and mapped; ``module.``/``_orig_mod.`` prefixes are stripped, a wrapping
prefix (``backbone.``, ``backbone.body.``, ``encoder.``, ...) is found by matching keys, and the
classifier is dropped.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .base import Backbone, Normalization

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
NESTED_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "module", "net")
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


class WeightsError(ValueError):
    """A checkpoint that cannot be used: unreadable, wrong layout, missing keys."""


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


# -- reading files -----------------------------------------------------------------------------
def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint file safely (``weights_only=True`` / safetensors) into a dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {str(path)!r} does not exist; pass the path of a local "
            f"checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}) or a tag like 'torchvision:IMAGENET1K_V1'"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own error types
            raise WeightsError(f"cannot read safetensors file {str(path)!r}: {e}") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise WeightsError(
                f"{str(path)!r} holds Python objects that are not allowed in a safe load "
                "(torch.load(weights_only=True)). Re-save only the tensors: "
                "torch.save(model.state_dict(), 'weights.pth')"
            ) from e
        raise WeightsError(
            f"cannot read checkpoint {str(path)!r} ({type(e).__name__}: {e}); the file is "
            "truncated or not a PyTorch checkpoint. Download or copy it again."
        ) from e
    if not isinstance(obj, Mapping):
        raise WeightsError(
            f"{str(path)!r} holds a {type(obj).__name__}, not a state_dict; "
            "save model.state_dict() instead of the module"
        )
    return dict(obj)


def extract_state_dict(obj: Mapping, *, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensor state_dict inside ``obj``: itself, or nested under a common key."""
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    for key in NESTED_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner:
            return extract_state_dict(inner, source=source)
    raise WeightsError(
        f"no state_dict found in {source}: top-level keys are {sorted(map(str, obj))[:12]}; "
        f"expected tensors, or a dict of tensors under one of {NESTED_KEYS}"
    )


# -- resolving tags ----------------------------------------------------------------------------
def _downloads_allowed() -> bool:
    off = {"1", "true", "yes", "on"}
    return not any(
        os.environ.get(v, "").lower() in off for v in ("RESVISION_OFFLINE", "HF_HUB_OFFLINE")
    )


def _download(url: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False, suffix=".part") as tmp:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                shutil.copyfileobj(response, tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        except BaseException:
            Path(tmp.name).unlink(missing_ok=True)
            raise
    os.replace(tmp.name, dest)


def _missing_file_error(what: str, dest: Path, url: str, reason: str) -> WeightsError:
    return WeightsError(
        f"{what}: file {dest.name!r} is not cached and {reason}. Download it from {url} "
        f"and put it at {dest} (or pass the file's path as weights=)"
    )


def _fetch(what: str, dest: Path, url: str) -> Path:
    if dest.is_file():
        return dest
    if not _downloads_allowed():
        raise _missing_file_error(what, dest, url, "downloads are off (RESVISION_OFFLINE)")
    try:
        log.info("downloading %s to %s", url, dest)
        _download(url, dest)
    except OSError as e:
        raise _missing_file_error(what, dest, url, f"the download failed ({e})") from e
    return dest


def _torchvision_weights(arch: str, tag: str) -> tuple[Path, Normalization]:
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError):
        raise WeightsError(
            f"torchvision has no weights for {arch!r}; use a file path or a 'timm:' tag"
        ) from None
    try:
        entry = enum[tag]
    except KeyError:
        raise WeightsError(
            f"torchvision has no {tag!r} weights for {arch}; choose one of {[w.name for w in enum]}"
        ) from None
    dest = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(entry.url)
    path = _fetch(f"torchvision:{tag} for {arch}", dest, entry.url)
    tf = entry.transforms()
    return path, Normalization(tuple(tf.mean), tuple(tf.std))


def _timm_weights(arch: str, tag: str) -> tuple[Path, Normalization]:
    import timm

    full = f"{arch}.{tag}" if tag else arch
    cfg = timm.models.get_pretrained_cfg(full)
    if cfg is None:
        tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{arch}.*")]
        raise WeightsError(f"timm has no pretrained weights {full!r}; known tags: {tags}")
    norm = Normalization(tuple(cfg.mean), tuple(cfg.std))
    if cfg.hf_hub_id:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache

        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else []
        names += ["model.safetensors", "pytorch_model.bin"]
        for name in names:
            cached = try_to_load_from_cache(cfg.hf_hub_id, name)
            if isinstance(cached, str):
                return Path(cached), norm
        url = f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/{names[0]}"
        hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
            os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub"
        )
        dest = Path(hub) / ("models--" + cfg.hf_hub_id.replace("/", "--"))
        if not _downloads_allowed():
            raise _missing_file_error(
                f"timm:{tag} for {arch}", dest, url, "downloads are off (RESVISION_OFFLINE)"
            )
        try:
            return Path(hf_hub_download(cfg.hf_hub_id, names[0])), norm
        except Exception as e:  # network errors come in many types from huggingface_hub
            raise _missing_file_error(f"timm:{tag} for {arch}", dest, url, f"({e})") from e
    if cfg.url:
        dest = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)
        return _fetch(f"timm:{tag} for {arch}", dest, cfg.url), norm
    raise WeightsError(f"timm's config {full!r} names no file to load")


def resolve_weights(arch: str, weights: str | os.PathLike) -> tuple[Path, Normalization | None]:
    """A local file for ``weights`` and the normalization a tag declares (None for paths)."""
    text = str(weights)
    source, sep, tag = text.partition(":")
    if sep and source in ("torchvision", "timm") and not Path(text).exists():
        if source == "torchvision":
            return _torchvision_weights(arch, tag)
        return _timm_weights(arch, tag)
    return Path(weights), None


# -- mapping keys ------------------------------------------------------------------------------
def _strip(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def detect_layout(keys) -> str:
    """Name the key layout: ``arcface_torch``, ``openmmlab``, ``torchvision/timm`` or ``unknown``."""
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
        model.normalization = normalization.adapted(_in_channels(model))
    return report


def _in_channels(model: Backbone) -> int:
    return model.state_dict()[model.first_conv].shape[1]


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
