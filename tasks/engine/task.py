"""What a task supplies to the engine: model, data, losses, metrics."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .distributed import DistInfo


@dataclass
class EvalContext:
    """What an evaluation needs besides the model and the data."""

    device: torch.device
    amp: str = "off"
    dist: DistInfo = field(default_factory=DistInfo)
    run_dir: Path | None = None
    channels_last: bool = False
    cfg: Any = None  # the run's config (inference options, ignore label, ...)

    def autocast(self):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)


class Task:
    """Base class of the detection, segmentation and face tasks (and of the tests' toy task).

    The task's config is a dataclass with sections ``model``, ``data`` (with ``batch_size``,
    ``num_workers`` and optionally ``eval_batch_size``), ``optim`` (:class:`OptimConfig`),
    ``schedule`` (:class:`ScheduleConfig`) and ``runtime`` (:class:`RuntimeConfig`).

    Training datasets are indexed by ``(index, seed)`` keys (seeded augmentation, see
    ``engine.data``); evaluation datasets by plain ``index``.
    """

    name: str = ""
    config_class: type = object
    main_metric: str = ""  # key of evaluate()'s result that selects best.pt (higher is better)
    default_preset: str = ""

    def checkpoint_for_inference(
        self, path: str | Path, overrides: Iterable[str] = ()
    ) -> tuple[dict[str, Any], Any]:
        """A checkpoint (a file, or a run folder's ``best.pt``) and its config with
        ``overrides`` applied and ``model.weights`` unset (the weights come from the checkpoint)."""
        import dataclasses

        from .checkpoint import load_checkpoint
        from .config import apply_overrides, merge

        path = Path(path)
        if path.is_dir() and (path / "best.pt").is_file():
            path = path / "best.pt"
        state = load_checkpoint(path, task=self.name)
        cfg = apply_overrides(merge(self.config_class(), state["config"]), overrides)
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights=None))
        return state, cfg

    def presets(self) -> dict[str, Callable[[], Any]]:
        raise NotImplementedError

    def finalize_config(self, cfg: Any) -> Any:
        """Fill values that depend on the data (e.g. the number of classes); checks."""
        return cfg

    def build_model(self, cfg: Any) -> nn.Module:
        """A model whose ``forward(images, targets)`` returns a dict of losses in train mode."""
        raise NotImplementedError

    def build_datasets(self, cfg: Any) -> tuple[Dataset, Dataset | None]:
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

    def evaluate(self, model: nn.Module, loader: Iterable, ctx: EvalContext) -> dict[str, float]:
        """Metrics over the whole evaluation set.

        ``loader`` yields this rank's shard; gather or reduce the other ranks' results before
        scoring, and return the same metrics on every rank.
        """
        raise NotImplementedError

    def checkpoint_meta(self, cfg: Any, train_set: Dataset) -> dict[str, Any]:
        """Extra plain values stored in checkpoints (e.g. class names)."""
        return {}

    def command(self, verb: str, argv: list[str]) -> int:
        """``resvision predict|export|benchmark <task> ...``: the task parses ``argv`` itself."""
        raise ValueError(f"`resvision {verb} {self.name}` is not available")

    def after_training(self, model: nn.Module, cfg: Any, ctx: EvalContext) -> None:
        """Optional: reports written into the run folder at the end (main rank only)."""
