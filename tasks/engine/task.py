"""What a task supplies to the engine: data, model, losses and an evaluator.

A :class:`Task` is the engine's plug-in and nothing else: it does not load checkpoints for
inference (each task's ``model.py`` does) and knows nothing of the command line (``tools/``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .distributed import DistInfo
from .runtime import autocast

log = logging.getLogger(__name__)


@dataclass
class EvalContext:
    """What an evaluation needs besides the model and the data."""

    device: torch.device
    amp: str = "off"
    dist: DistInfo = field(default_factory=DistInfo)
    channels_last: bool = False
    cfg: Any = None  # the run's config (inference options, ignore label, ...)

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.amp)


class Evaluator:
    """Metrics over an evaluation set, fed batch by batch (detectron2's ``DatasetEvaluator``).

    :meth:`reset` starts an evaluation, :meth:`process` takes one batch and the model's
    predictions for it (this rank's shard), :meth:`evaluate` gathers every rank's results and
    returns the same metrics on every rank. :meth:`write_report` writes files about the last
    evaluation into a folder (main rank) and returns text to print, if any.
    """

    def reset(self) -> None:
        raise NotImplementedError

    def process(self, batch: dict[str, Any], outputs: Any) -> None:
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        raise NotImplementedError

    def write_report(self, folder: Path) -> str | None:
        return None


class Task:
    """Base class of the detection, segmentation and face tasks (and of the tests' toy task).

    The task's config is a dataclass with sections ``model``, ``data`` (with ``batch_size``,
    ``num_workers`` and optionally ``eval_batch_size``), ``optim`` (:class:`OptimConfig`),
    ``schedule`` (:class:`ScheduleConfig`) and ``runtime`` (:class:`RuntimeConfig`).

    Training datasets are indexed by ``(index, seed)`` keys (seeded augmentation, see
    ``engine.data``); evaluation datasets by plain ``index``. The engine calls, in order:
    :meth:`build_train_set`, :meth:`finalize_config`, :meth:`build_val_set`,
    :meth:`build_model`, :meth:`build_evaluator`; evaluation alone (``resvision eval``) skips
    the training set and takes the checkpoint's finalized config.
    """

    name: str = ""
    config_class: type = object
    main_metric: str = ""  # key of the evaluator's metrics that selects best.pt (higher is better)
    default_preset: str = ""

    def note_skipped(self, messages: list[str]) -> None:
        """Warn once per unreadable item a training batch replaced (datasets built with
        ``skip_bad_images`` report them in the batch's ``skipped``)."""
        reported = self.__dict__.setdefault("_skipped_reported", set())
        for m in sorted(set(messages) - reported):
            log.warning("skipped: %s", m)
        reported |= set(messages)

    def presets(self) -> dict[str, Callable[[], Any]]:
        raise NotImplementedError

    def build_train_set(self, cfg: Any) -> Dataset:
        raise NotImplementedError

    def finalize_config(self, cfg: Any, train_set: Dataset) -> Any:
        """Fill values that depend on the training data (e.g. the number of classes); checks."""
        return cfg

    def build_val_set(self, cfg: Any) -> Dataset | None:
        """The evaluation set of a finalized config, or None when the config names none."""
        raise NotImplementedError

    def build_model(self, cfg: Any) -> nn.Module:
        """A model whose ``forward(images, targets)`` returns a dict of losses in train mode."""
        raise NotImplementedError

    def collate(self, items: list) -> dict[str, Any]:
        """Items -> a batch dict with at least ``images``."""
        raise NotImplementedError

    def ddp_ignored_parameters(self, model: nn.Module) -> list[str]:
        """Parameter names DDP must not synchronise (e.g. class centres sharded per rank)."""
        return []

    def group_ids(self, dataset: Dataset) -> list[int] | None:
        """Optional batching groups per item (e.g. aspect ratio); None = no grouping."""
        return None

    def training_losses(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return model(batch["images"], batch["targets"])

    def batch_size_of(self, batch: dict[str, Any]) -> int:
        return len(batch["images"])

    def build_evaluator(self, cfg: Any, dataset: Dataset) -> Evaluator:
        raise NotImplementedError

    def predict_batch(self, model: nn.Module, batch: dict[str, Any], ctx: EvalContext) -> Any:
        """The model's predictions for an evaluation batch, as the task's evaluator takes them."""
        raise NotImplementedError

    def checkpoint_meta(self, cfg: Any, train_set: Dataset) -> dict[str, Any]:
        """Extra plain values stored in checkpoints (e.g. class names)."""
        return {}
