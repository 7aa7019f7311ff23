"""Evaluation: a model over this rank's shard of a dataset, scored by the task's evaluator."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from . import distributed as D
from .checkpoint import load_model_weights
from .data import eval_batches, make_loader
from .errors import ConfigError
from .progress import progress
from .runtime import resolve_device, to_device
from .task import EvalContext, Evaluator, Task

log = logging.getLogger("resvision.eval")


def evaluate(
    task: Task,
    model: nn.Module,
    dataset: Dataset,
    evaluator: Evaluator,
    cfg: Any,
    ctx: EvalContext,
) -> dict[str, float]:
    """Run ``model`` over this rank's shard of ``dataset``; the evaluator gathers and scores."""
    batch_size = getattr(cfg.data, "eval_batch_size", None) or cfg.data.batch_size
    batches = eval_batches(
        len(dataset), batch_size, rank=ctx.dist.rank, world_size=ctx.dist.world_size
    )
    loader = make_loader(
        dataset,
        batches,
        collate_fn=task.collate,
        num_workers=cfg.data.num_workers,
        pin_memory=ctx.device.type == "cuda",
    )
    was_training = model.training
    model.eval()
    evaluator.reset()
    if ctx.dist.is_main and len(batches) > 1:
        loader = progress(loader, total=len(batches), desc="evaluation")
    try:
        with torch.no_grad():
            for batch in loader:
                batch = to_device(batch, ctx.device, ctx.channels_last)
                evaluator.process(batch, task.predict_batch(model, batch, ctx))
        return evaluator.evaluate()
    finally:
        model.train(was_training)


def evaluate_checkpoint(task: Task, cfg: Any, state: dict[str, Any]) -> dict[str, float]:
    """Evaluate a checkpoint (its EMA weights when it has them) on ``cfg``'s validation set.

    ``cfg`` is the checkpoint's finalized config (with any overrides): only the validation
    data is read.
    """
    rt = cfg.runtime
    dist = D.init_distributed(resolve_device(rt.device).type)
    device = resolve_device(rt.device, dist)
    val_set = task.build_val_set(cfg)
    if val_set is None:
        raise ConfigError(f"the {task.name} config names no validation data")
    model = task.build_model(cfg).to(device)
    which = load_model_weights(model, state)
    log.info("evaluating the %s weights of %s", which, state.get("path"))
    ctx = EvalContext(device=device, amp=rt.amp, dist=dist, channels_last=rt.channels_last, cfg=cfg)
    evaluator = task.build_evaluator(cfg, val_set)
    return evaluate(task, model, val_set, evaluator, cfg, ctx)
