"""The training loop every task shares: a plain function, read top to bottom.

``train(task, cfg)`` runs single-process or under torchrun (DDP), with AMP, gradient
accumulation and clipping, EMA, a non-finite loss guard, atomic checkpoints (``RUN/last.pt`` and
``RUN/best.pt``) from which ``resume`` continues exactly, also mid-epoch, metrics in
``RUN/metrics.jsonl`` and ``RUN/tb/``, and plots in ``RUN/plots/``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from . import distributed as D
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import save_yaml, to_dict
from .data import epoch_batches, eval_batches, make_loader
from .ema import ModelEMA
from .errors import ConfigError, NonFiniteLossError
from .grad_norms import stage_grad_norms
from .logger import MetricsLogger, peak_memory_gb
from .optim import build_optimizer, build_scheduler, scaled_lr
from .plots import plot_run
from .task import EvalContext, Task

log = logging.getLogger("resvision.train")


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
class TrainResult:
    run_dir: Path
    iteration: int
    stopped_by: str | None = None  # "SIGINT" / "SIGTERM" when stopped early
    metrics: dict[str, float] = field(default_factory=dict)
    best_metric: float | None = None
    skipped_steps: int = 0


# -- small pieces ------------------------------------------------------------------------------
def resolve_device(spec: str, dist: D.DistInfo | None = None) -> torch.device:
    """``auto`` -> CUDA when available (``cuda:LOCAL_RANK`` under torchrun), else CPU."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"runtime.device={spec!r} but CUDA is not available; use cpu")
        if device.index is None:
            device = torch.device("cuda", dist.local_rank if dist else 0)
    return device


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; ``deterministic`` also forbids nondeterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # CPU kernels are deterministic; some CUDA backward kernels (RoIAlign, scatter) only
        # exist in nondeterministic form, so on GPU this warns instead of failing.
        torch.use_deterministic_algorithms(True, warn_only=torch.cuda.is_available())
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def to_device(obj: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move tensors in nested dicts/lists/tuples to ``device`` (images optionally NHWC)."""
    if isinstance(obj, torch.Tensor):
        obj = obj.to(device, non_blocking=True)
        if channels_last and obj.dim() == 4:
            obj = obj.contiguous(memory_format=torch.channels_last)
        return obj
    if isinstance(obj, dict):
        return {k: to_device(v, device, channels_last and k == "images") for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_device(v, device, channels_last) for v in obj)
    return obj


def autocast(device: torch.device, amp: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class StopSignal:
    """SIGINT/SIGTERM ask training to checkpoint and stop; a second SIGINT stops at once."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        log.warning(
            "%s received: finishing this step, writing a checkpoint, stopping", self.received
        )

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _fmt_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


# -- evaluation --------------------------------------------------------------------------------
def evaluate(task: Task, model: nn.Module, dataset, cfg: Any, ctx: EvalContext) -> dict[str, float]:
    """Evaluate ``model`` on ``dataset``: this rank's shard, then the task gathers and scores."""
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

    def moved():
        for batch in loader:
            yield to_device(batch, ctx.device, ctx.channels_last)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return task.evaluate(model, moved(), ctx)
    finally:
        model.train(was_training)


# -- the loop ----------------------------------------------------------------------------------
def train(task: Task, cfg: Any, *, resume: str | Path | None = None) -> TrainResult:
    """Train ``task`` with ``cfg``; ``resume`` is a checkpoint (or run folder) to continue."""
    cfg = task.finalize_config(cfg)
    rt, sched, ocfg = cfg.runtime, cfg.schedule, cfg.optim
    device_type = resolve_device(rt.device).type
    dist = D.init_distributed(device_type)
    device = resolve_device(rt.device, dist)
    main = dist.is_main
    run_dir = Path(rt.output_dir)
    say = (lambda msg: tqdm.write(msg)) if main else (lambda msg: None)

    state = load_checkpoint(resume, task=task.name) if resume else None
    seed_everything(rt.seed + dist.rank, rt.deterministic)

    train_set, val_set = task.build_datasets(cfg)
    model = task.build_model(cfg).to(device)
    if getattr(cfg.model, "sync_bn", False) and dist.enabled:
        if device.type != "cuda":
            raise ConfigError(
                "model.sync_bn=true needs CUDA devices (torch's SyncBatchNorm has no CPU kernel); "
                "on CPU freeze batch norm instead (frozen_bn / eval_bn)"
            )
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)

    accumulate = max(1, ocfg.accumulate_steps)
    total_batch = cfg.data.batch_size * dist.world_size * accumulate
    lr = scaled_lr(ocfg, total_batch)
    if ocfg.auto_scale_lr and lr != ocfg.lr:
        say(
            f"lr {ocfg.lr:g} is for {ocfg.reference_batch_size} images per step; scaled to {lr:g} "
            f"for {total_batch} ({cfg.data.batch_size} x {dist.world_size} processes x "
            f"{accumulate} accumulation). --set optim.auto_scale_lr=false keeps {ocfg.lr:g}"
        )
    optimizer = build_optimizer(model, ocfg, lr)
    scheduler = build_scheduler(optimizer, sched)
    scaler = torch.amp.GradScaler(device.type, enabled=rt.amp == "fp16")
    ema = ModelEMA(model, rt.ema_decay) if rt.ema else None
    progress = Progress()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema"):
            ema.load_state_dict(state["ema"])
        progress = Progress(**state["progress"])
        rngs = state["rng"]
        set_rng_state(rngs[dist.rank] if dist.rank < len(rngs) else rngs[0])
        say(
            f"resumed from {state['path']} at iteration {progress.iteration} (epoch {progress.epoch}, batch {progress.batch_in_epoch})"
        )

    ddp = model
    if dist.enabled:
        ignored = task.ddp_ignored_parameters(model)
        if ignored:
            nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                model, ignored
            )
        ddp = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, run_dir / "config.yaml")
    logger = MetricsLogger(run_dir, enabled=main, tensorboard=rt.tensorboard)
    if state is not None:
        logger.truncate_after(progress.iteration)
    meta = task.checkpoint_meta(cfg, train_set)
    ctx = EvalContext(
        device=device,
        amp=rt.amp,
        dist=dist,
        run_dir=run_dir,
        channels_last=rt.channels_last,
        cfg=cfg,
    )
    group_ids = task.group_ids(train_set)
    trainable = [p for p in model.parameters() if p.requires_grad]

    saved_at = {"last.pt": progress.iteration}

    def checkpoint(name: str) -> None:
        saved_at[name] = progress.iteration
        rngs = D.gather_objects(rng_state())
        if not main:
            return
        save_checkpoint(
            run_dir / name,
            {
                "task": task.name,
                "config": to_dict(cfg),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "progress": vars(progress).copy(),
                "rng": rngs,
                "meta": meta,
            },
        )

    last_metrics: dict[str, float] = {}
    evaluated_at = {"iteration": -1}

    def run_evaluation() -> None:
        nonlocal last_metrics
        if val_set is None or evaluated_at["iteration"] == progress.iteration:
            return
        evaluated_at["iteration"] = progress.iteration
        t0 = time.perf_counter()
        metrics = {f"val/{k}": v for k, v in evaluate(task, model, val_set, cfg, ctx).items()}
        if ema is not None:
            metrics |= {
                f"val_ema/{k}": v for k, v in evaluate(task, ema.module, val_set, cfg, ctx).items()
            }
        last_metrics = metrics
        logger.log({"iteration": progress.iteration, "epoch": progress.epoch, **metrics})
        key = f"{'val_ema' if ema is not None else 'val'}/{task.main_metric}"
        value = metrics.get(key)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        say(
            f"evaluation at iteration {progress.iteration} ({time.perf_counter() - t0:.1f} s): {shown}"
        )
        if value is not None and (progress.best_metric is None or value > progress.best_metric):
            progress.best_metric, progress.best_iteration = float(value), progress.iteration
            checkpoint("best.pt")
            say(f"new best {key} = {value:.4f}: wrote {run_dir / 'best.pt'}")

    # A live bar on a terminal; in logs (no TTY), one line per log record instead.
    show_bar = main and rt.progress and sys.stderr.isatty()
    window = {"terms": None, "steps": 0, "images": 0, "data": 0.0, "start": time.perf_counter()}
    stopped_by = None
    grad_norms: dict[str, torch.Tensor] = {}  # of the latest step (runtime.log_grad_norms)
    train_start, start_iteration = time.perf_counter(), progress.iteration
    with StopSignal() as stop:
        while progress.iteration < sched.iterations and stopped_by is None:
            batches = epoch_batches(
                len(train_set),
                cfg.data.batch_size,
                seed=rt.seed,
                epoch=progress.epoch,
                rank=dist.rank,
                world_size=dist.world_size,
                group_ids=group_ids,
            )
            batches = batches[: len(batches) - len(batches) % accumulate]
            if not batches:
                raise ConfigError(
                    f"an epoch holds fewer than {accumulate} batches; lower optim.accumulate_steps"
                )
            loader = make_loader(
                train_set,
                batches,
                collate_fn=task.collate,
                num_workers=cfg.data.num_workers,
                start=progress.batch_in_epoch,
                seed=rt.seed * 1000 + progress.epoch,
                pin_memory=device.type == "cuda",
            )
            bar = tqdm(
                total=len(batches),
                initial=progress.batch_in_epoch,
                desc=f"epoch {progress.epoch}",
                disable=not show_bar,
                dynamic_ncols=True,
                mininterval=1.0,
                leave=False,
            )
            ddp.train()
            micro, window_bad, t_ready = 0, False, time.perf_counter()
            epoch_done = True
            for batch in loader:
                window["data"] += time.perf_counter() - t_ready
                batch = to_device(batch, device, rt.channels_last)
                micro += 1
                last_micro = micro == accumulate
                sync = contextlib.nullcontext() if last_micro or not dist.enabled else ddp.no_sync()
                with sync:
                    with autocast(device, rt.amp):
                        losses = task.training_losses(ddp, batch)
                    loss = sum(losses.values())
                    terms = torch.stack([v.detach().float() for v in losses.values()]).cpu()
                    finite = bool(torch.isfinite(terms).all())
                    if dist.enabled:
                        finite = not D.any_rank(not finite, device)
                    if finite and not window_bad:
                        scaler.scale(loss / accumulate).backward()
                    else:
                        window_bad = True
                window["images"] += task.batch_size_of(batch)
                progress.batch_in_epoch += 1
                bar.update(1)
                if not last_micro:
                    t_ready = time.perf_counter()
                    continue
                # -- one optimizer step --------------------------------------------------
                if window_bad:
                    optimizer.zero_grad(set_to_none=True)
                    progress.skipped_steps += 1
                    progress.nonfinite_in_a_row += 1
                    shown = ", ".join(f"{k}={v:.4g}" for k, v in zip(losses, terms.tolist()))
                    say(f"iteration {progress.iteration}: non-finite loss ({shown}); step skipped")
                    if progress.nonfinite_in_a_row >= rt.max_nonfinite:
                        raise NonFiniteLossError(
                            f"training stopped at iteration {progress.iteration}: the loss was "
                            f"non-finite for {progress.nonfinite_in_a_row} consecutive steps "
                            f"({shown}). Try a lower learning rate (--set optim.lr={lr / 10:g}), "
                            "fp32 (--amp off), or gradient clipping (--set optim.clip_grad_norm=10)"
                        )
                else:
                    progress.nonfinite_in_a_row = 0
                    if ocfg.clip_grad_norm or rt.log_grad_norms:
                        scaler.unscale_(optimizer)
                    if rt.log_grad_norms:  # what the backward pass gave, before clipping
                        grad_norms = stage_grad_norms(model)
                    if ocfg.clip_grad_norm:
                        torch.nn.utils.clip_grad_norm_(trainable, ocfg.clip_grad_norm)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    if ema is not None:
                        ema.update(model)
                    w = window["terms"]
                    window["terms"] = terms if w is None else w + terms
                    window["steps"] += 1
                current_lr = optimizer.param_groups[0]["lr"]
                scheduler.step()
                progress.iteration += 1
                micro, window_bad = 0, False

                it = progress.iteration
                if window["steps"]:
                    mean = (window["terms"] / window["steps"]).tolist()
                    bar.set_postfix_str(f"loss {sum(mean):.4f} lr {current_lr:.3g}", refresh=False)
                if it % rt.log_period == 0 or it == 1 or it == sched.iterations:
                    elapsed = max(time.perf_counter() - window["start"], 1e-9)
                    record: dict[str, Any] = {
                        "iteration": it,
                        "epoch": progress.epoch,
                        "lr": current_lr,
                    }
                    if window["steps"]:
                        mean = (window["terms"] / window["steps"]).tolist()
                        values = dict(zip(losses, mean)) | {"loss": sum(mean)}
                        record |= D.all_reduce_mean(values, device)
                    record |= {
                        "images_per_s": window["images"] * dist.world_size / elapsed,
                        "data_time_share": window["data"] / elapsed,
                        "peak_memory_gb": peak_memory_gb(device),
                        "skipped_steps": progress.skipped_steps,
                    }
                    record |= grad_norms
                    logger.log(record)
                    if rt.progress and not show_bar:
                        say(
                            f"iteration {it}/{sched.iterations} loss {record.get('loss', float('nan')):.4f} "
                            f"lr {current_lr:.3g} {record['images_per_s']:.1f} img/s "
                            f"data {100 * record['data_time_share']:.0f}% mem {record['peak_memory_gb']:.2f} GB"
                        )
                    bar.set_postfix_str(
                        f"loss {record.get('loss', float('nan')):.4f} lr {current_lr:.3g} "
                        f"{record['images_per_s']:.1f} img/s data {100 * record['data_time_share']:.0f}% "
                        f"mem {record['peak_memory_gb']:.2f} GB"
                    )
                    window = {
                        "terms": None,
                        "steps": 0,
                        "images": 0,
                        "data": 0.0,
                        "start": time.perf_counter(),
                    }
                stop_now = stop.received is not None
                if dist.enabled:
                    stop_now = D.any_rank(stop_now, device)
                if stop_now:
                    stopped_by = stop.received or "SIGTERM"
                    epoch_done = False
                    break
                if it % rt.checkpoint_period == 0:
                    checkpoint("last.pt")
                if rt.eval_period and it % rt.eval_period == 0:
                    run_evaluation()
                if it >= sched.iterations:
                    epoch_done = progress.batch_in_epoch >= len(batches)
                    break
                t_ready = time.perf_counter()
            bar.close()
            if epoch_done:
                progress.epoch += 1
                progress.batch_in_epoch = 0
                if not rt.eval_period and progress.iteration < sched.iterations:
                    run_evaluation()
                # at epoch end too, unless epochs are tiny (then every checkpoint_period / 10)
                if progress.iteration - saved_at["last.pt"] >= max(1, rt.checkpoint_period // 10):
                    checkpoint("last.pt")
                done = progress.iteration - start_iteration
                rate = (time.perf_counter() - train_start) / max(done, 1)
                say(
                    f"epoch {progress.epoch - 1} done: iteration {progress.iteration}/{sched.iterations}, "
                    f"{progress.skipped_steps} skipped steps, eta {_fmt_duration(rate * (sched.iterations - progress.iteration))}"
                )

    if stopped_by is not None:
        checkpoint("last.pt")
        say(
            f"stopped by {stopped_by} at iteration {progress.iteration}; wrote {run_dir / 'last.pt'}; continue with --resume"
        )
    else:
        run_evaluation()
        checkpoint("last.pt")
        if main:
            task.after_training(unwrap(ema.module if ema is not None else model), cfg, ctx)
            plot_run(run_dir)
    logger.close()
    D.barrier()
    return TrainResult(
        run_dir=run_dir,
        iteration=progress.iteration,
        stopped_by=stopped_by,
        metrics=last_metrics,
        best_metric=progress.best_metric,
        skipped_steps=progress.skipped_steps,
    )


def load_model_weights(model: nn.Module, state: dict[str, Any], *, prefer_ema: bool = True) -> str:
    """Load a checkpoint's weights into ``model`` (the EMA's when present); return which."""
    ema = state.get("ema")
    if prefer_ema and ema:
        model.load_state_dict(ema["module"])
        return "ema"
    model.load_state_dict(state["model"])
    return "model"


def evaluate_checkpoint(task: Task, cfg: Any, state: dict[str, Any]) -> dict[str, float]:
    """Evaluate a checkpoint (its EMA weights when it has them) on ``cfg``'s validation set."""
    cfg = task.finalize_config(cfg)
    device_type = resolve_device(cfg.runtime.device).type
    dist = D.init_distributed(device_type)
    device = resolve_device(cfg.runtime.device, dist)
    _, val_set = task.build_datasets(cfg)
    if val_set is None:
        raise ConfigError(f"the {task.name} config names no validation data")
    model = task.build_model(cfg).to(device)
    which = load_model_weights(model, state)
    log.info("evaluating the %s weights of %s", which, state.get("path"))
    ctx = EvalContext(
        device=device,
        amp=cfg.runtime.amp,
        dist=dist,
        channels_last=cfg.runtime.channels_last,
        cfg=cfg,
    )
    return evaluate(task, model, val_set, cfg, ctx)
