"""Checkpoints that survive faults, what they hold, and how they are loaded back.

A write is atomic (:mod:`.files`): a crash or a kill at any moment leaves either the old
complete file or the new one, never a truncated one. Loading uses
``torch.load(weights_only=True)``: everything a checkpoint stores is tensors and plain values.
A training checkpoint holds the model, optimizer, scheduler, scaler, EMA, the :class:`Progress`,
every rank's RNG states, the resolved config and the task's meta (class names, ...).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from resvision.backbones.weights import extract_state_dict, read_checkpoint

from .config import apply_overrides, merge
from .errors import CheckpointError, ConfigError
from .files import atomic_write_bytes

FORMAT_VERSION = 1
log = logging.getLogger("resvision")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Serialise ``state`` and write it atomically to ``path``."""
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **state}, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


INFERENCE_ORDER = ("best.pt", "last.pt")  # evaluation, prediction, export: the best weights
RESUME_ORDER = ("last.pt",)  # continuing a run: where it stopped


def resolve_checkpoint(path: str | Path, order: Iterable[str] = INFERENCE_ORDER) -> Path:
    """A checkpoint file as given, or the first of ``order`` in a run folder."""
    path = Path(path)
    if not path.is_dir():
        return path
    order = tuple(order)
    found = next((path / name for name in order if (path / name).is_file()), None)
    if found is None:
        raise CheckpointError(f"run folder {str(path)!r} holds no {' or '.join(order)}")
    return found


def load_checkpoint(
    path: str | Path, *, task: str | None = None, order: Iterable[str] = INFERENCE_ORDER
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    ``path`` may be a run folder: the first of ``order`` it holds is used (``best.pt``, then
    ``last.pt``; resuming asks for ``last.pt``). A missing, truncated or corrupt file, or one
    written by another task, raises :class:`CheckpointError` naming the file.
    """
    path = resolve_checkpoint(path, order)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # never pass on torch's advice to load unsafely
        others = sorted(p.name for p in path.parent.glob("*.pt") if p != path)
        hint = f"; other checkpoints in that folder: {', '.join(others)}" if others else ""
        raise CheckpointError(
            f"checkpoint {str(path)!r} is truncated or corrupt, or not a resvision checkpoint "
            f"({type(e).__name__}){hint}"
        ) from e
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{str(path)!r} is not a resvision checkpoint (no 'model' entry)")
    if task is not None and state.get("task") not in (None, task):
        raise CheckpointError(
            f"{str(path)!r} is a {state.get('task')} checkpoint, not a {task} one; "
            f"use `resvision ... {state.get('task')}` with it"
        )
    state["path"] = str(path)
    return state


# -- random number generator states (as tensors, so weights_only loading accepts them) ---------
def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states, in weights_only-loadable form."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {
            "version": version,
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["kind"],
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- what a training checkpoint holds ----------------------------------------------------------
@dataclass
class Progress:
    """Where training stands; stored in checkpoints."""

    iteration: int = 0  # optimizer steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # loader batches of the current epoch already consumed
    skipped_steps: int = 0  # steps skipped for a non-finite loss
    nonfinite_in_a_row: int = 0
    best_metric: float | None = None
    best_iteration: int = -1


@dataclass
class TrainingState:
    """The objects a training checkpoint saves and a resume restores."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    ema: Any = None  # engine.ema.ModelEMA or None
    progress: Progress = dataclasses.field(default_factory=Progress)

    def to_checkpoint(
        self, *, task: str, config: dict, rngs: list, meta: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "task": task,
            "config": config,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "progress": vars(self.progress).copy(),
            "rng": rngs,
            "meta": meta,
        }

    def restore(self, state: dict[str, Any], rank: int = 0) -> None:
        """Continue exactly where ``state`` stopped (this rank's RNG states included)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        self.progress = Progress(**state["progress"])
        rngs = state["rng"]
        set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0])


# -- loading weights for evaluation and inference ----------------------------------------------
def model_state_dict(state: dict[str, Any], *, prefer_ema: bool = True) -> tuple[dict, str]:
    """The weights to use from a checkpoint (the EMA's when present) and which they are."""
    ema = state.get("ema")
    if prefer_ema and ema:
        return ema["module"], "ema"
    return state["model"], "model"


def load_model_weights(model: nn.Module, state: dict[str, Any], *, prefer_ema: bool = True) -> str:
    """Load a checkpoint's weights into ``model`` (the EMA's when present); return which."""
    weights, which = model_state_dict(state, prefer_ema=prefer_ema)
    model.load_state_dict(weights)
    return which


def load_state_dict_checked(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str, hint: str
) -> None:
    """Load a whole-model state_dict; missing or unexpected keys and shape mismatches raise one
    error that names ``source``, lists them and ends with ``hint`` (what to check)."""
    expected = model.state_dict()
    counted = lambda k: not k.endswith("num_batches_tracked")  # noqa: E731
    missing = [k for k in expected if k not in state_dict and counted(k)]
    unexpected = [k for k in state_dict if k not in expected and counted(k)]
    mismatched = [
        f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        raise ConfigError(
            f"{source} does not fit this {type(model).__name__}: missing {missing[:8]}, "
            f"unexpected {unexpected[:8]}, shape mismatches {mismatched[:4]}; {hint}"
        )
    model.load_state_dict(state_dict, strict=False)


def build_with_weights(
    weights: str | None,
    build: Callable[[Any], nn.Module],
    *,
    whole_model: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor] | None],
    hint: str,
) -> nn.Module:
    """A task's model built from ``model.weights``, which may name backbone weights or a whole
    model: a file is read once and ``whole_model`` decides (the state_dict in the model's layout,
    or None for backbone weights only). ``build(backbone_weights)`` makes the model, with the
    file's state_dict as its backbone weights, ``weights`` itself when it is no file (a
    pretrained tag the backbone resolves), or None when the file is a whole model, which is
    then loaded with :func:`load_state_dict_checked` (``hint``: what to check on a mismatch)."""
    backbone_weights: Any = weights
    whole = None
    if weights and Path(weights).is_file():
        sd = extract_state_dict(read_checkpoint(weights), source=weights)
        whole = whole_model(sd)
        backbone_weights = None if whole is not None else sd
    model = build(backbone_weights)
    if whole is not None:
        load_state_dict_checked(model, whole, source=str(weights), hint=hint)
        log.info("loaded a whole %s from %s", type(model).__name__, weights)
    return model


def load_trained_model(
    checkpoint: str | Path,
    build: Callable[[Any], nn.Module],
    *,
    task: str,
    config_class: type,
    device: str = "auto",
    overrides: Iterable[str] = (),
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """What every task's ``load_model`` returns, ``(model, config, meta)``, for a resvision
    checkpoint (a file or a run folder): ``build(config)``'s model with the checkpoint's weights
    (the EMA's when it has them), in eval mode on ``device``, and the task's meta (class names,
    ...) as the checkpoint stored it."""
    from .runtime import resolve_device

    state, cfg = load_for_inference(
        checkpoint, task=task, config_class=config_class, overrides=overrides
    )
    model = build(cfg)
    load_model_weights(model, state)
    model.to(resolve_device(device)).eval()
    return model, cfg, dict(state.get("meta") or {})


def load_for_inference(
    path: str | Path, *, task: str, config_class: type, overrides: Iterable[str] = ()
) -> tuple[dict[str, Any], Any]:
    """A checkpoint (a file, or a run folder's ``best.pt``) and its config with ``overrides``
    applied and ``model.weights`` unset (the weights come from the checkpoint)."""
    state = load_checkpoint(path, task=task)
    progress = state.get("progress") or {}
    best = progress.get("best_metric")
    weights = "EMA weights" if state.get("ema") else "weights"
    detail = (
        f", best score {best:.4f} at iteration {progress.get('best_iteration')}" if best else ""
    )
    log.info("using the %s of %s%s", weights, state["path"], detail)
    cfg = apply_overrides(merge(config_class(), state["config"]), overrides)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights=None))
    return state, cfg
