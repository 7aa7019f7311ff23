"""Where backbone weights come from: local files, torchvision and timm tags, their caches.

``weights=`` is either a path (``.pth``/``.pt``/``.bin``/``.ckpt`` read with
``torch.load(weights_only=True)``, or ``.safetensors``) or a named tag:

- ``"torchvision:IMAGENET1K_V2"``: torchvision's weights enum for the architecture, read from
  ``$TORCH_HOME/hub/checkpoints``;
- ``"timm:a1_in1k"`` (or ``"timm"`` for timm's default tag): timm's pretrained config, read
  from the Hugging Face cache (or the torch hub cache for URL-only weights).

A file that is not cached is downloaded unless ``RESVISION_OFFLINE``/``HF_HUB_OFFLINE`` is set;
when that fails, the error names the file, where to put it and the URL it comes from.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import torch

from ..base import Normalization

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
NESTED_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "module", "net")


class WeightsError(ValueError):
    """A checkpoint that cannot be used: unreadable, wrong layout, missing keys."""


# -- reading files -----------------------------------------------------------------------------
def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint file safely (``weights_only=True`` / safetensors) into a dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {str(path)!r} does not exist; pass the path of a local "
            f"checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}) or a tag like "
            "'torchvision:IMAGENET1K_V1'"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own error types
            raise WeightsError(f"cannot read safetensors file {str(path)!r}: {e}") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's own text would advise an unsafe load: never pass it on
        if "Unsupported global" in str(e):
            raise WeightsError(
                f"{str(path)!r} holds Python objects that are not allowed in a safe load "
                "(torch.load(weights_only=True)). Re-save only the tensors: "
                "torch.save(model.state_dict(), 'weights.pth')"
            ) from e
        raise WeightsError(
            f"cannot read checkpoint {str(path)!r} ({type(e).__name__}): the file is truncated "
            "or corrupt, or not a PyTorch checkpoint. Download or copy it again."
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
