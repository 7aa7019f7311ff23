"""The training loop every task shares: a plain function, read top to bottom.

``train(task, cfg)`` runs single-process or under torchrun (DDP), with AMP, gradient
accumulation and clipping, EMA, a non-finite loss guard, atomic checkpoints (``RUN/last.pt`` and
``RUN/best.pt``) from which ``resume`` continues exactly, also mid-epoch, metrics in
``RUN/metrics.jsonl`` and ``RUN/tb/``, and plots in ``RUN/plots/``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from . import distributed as D
from .checkpoint import (
    RESUME_ORDER,
    TrainingState,
    load_checkpoint,
    rng_state,
    save_checkpoint,
)
from .config import save_yaml, to_dict
from .data import epoch_batches, make_loader
from .ema import ModelEMA
from .errors import ConfigError, NonFiniteLossError
from .evaluation import evaluate
from .grad_norms import stage_grad_norms
from .logger import MetricsLogger, ThroughputWindow, peak_memory_gb
from .optim import build_optimizer, build_scheduler, scaled_lr
from .plots import plot_run
from .runtime import (
    StopSignal,
    autocast,
    format_duration,
    resolve_device,
    seed_everything,
    to_device,
    unwrap,
)
from .task import EvalContext, Evaluator, Task

log = logging.getLogger("resvision.train")


@dataclass
class TrainResult:
    run_dir: Path
    iteration: int
    stopped_by: str | None = None  # "SIGINT" / "SIGTERM" when stopped early
    metrics: dict[str, float] = field(default_factory=dict)
    best_metric: float | None = None
    skipped_steps: int = 0


@dataclass
class Run:
    """What the loop's steps share: the task and config, the process, the run folder, the
    evaluation set-up and its latest metrics."""

    task: Task
    cfg: Any
    dist: D.DistInfo
    device: torch.device
    run_dir: Path
    logger: MetricsLogger = field(default_factory=lambda: MetricsLogger(Path("."), enabled=False))
    meta: dict[str, Any] = field(default_factory=dict)
    val_set: Any = None
    evaluator: Evaluator | None = None
    ctx: EvalContext | None = None
    evaluated_at: int = -1
    metrics: dict[str, float] = field(default_factory=dict)
    saved_at: int = -1  # iteration of the latest last.pt
    grad_norms: dict[str, torch.Tensor] = field(default_factory=dict)  # of the latest step

    def evaluate(self, state: TrainingState) -> None:
        """Evaluate once per iteration at most (the latest metrics are kept)."""
        if self.evaluated_at != state.progress.iteration:
            self.evaluated_at = state.progress.iteration
            self.metrics = run_evaluation(self, state) or self.metrics

    def say(self, message: str) -> None:
        if self.dist.is_main:
            tqdm.write(message)

    def save(self, state: TrainingState, name: str) -> None:
        """Write ``RUN/name`` (every rank takes part: the RNG states are gathered)."""
        if name == "last.pt":
            self.saved_at = state.progress.iteration
        rngs = D.gather_objects(rng_state())
        if self.dist.is_main:
            payload = state.to_checkpoint(
                task=self.task.name, config=to_dict(self.cfg), rngs=rngs, meta=self.meta
            )
            save_checkpoint(self.run_dir / name, payload)


def build_training_state(model: nn.Module, cfg: Any, run: Run) -> TrainingState:
    """Optimizer (learning rate scaled to the total batch), scheduler, gradient scaler, EMA."""
    ocfg, rt = cfg.optim, cfg.runtime
    accumulate = max(1, ocfg.accumulate_steps)
    total_batch = cfg.data.batch_size * run.dist.world_size * accumulate
    lr = scaled_lr(ocfg, total_batch)
    if ocfg.auto_scale_lr and lr != ocfg.lr:
        run.say(
            f"lr {ocfg.lr:g} is for {ocfg.reference_batch_size} images per step; scaled to {lr:g} "
            f"for {total_batch} ({cfg.data.batch_size} x {run.dist.world_size} processes x "
            f"{accumulate} accumulation). --set optim.auto_scale_lr=false keeps {ocfg.lr:g}"
        )
    optimizer = build_optimizer(model, ocfg, lr)
    return TrainingState(
        model=model,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, cfg.schedule),
        scaler=torch.amp.GradScaler(run.device.type, enabled=rt.amp == "fp16"),
        ema=ModelEMA(model, rt.ema_decay) if rt.ema else None,
    )


def prepare_model(model: nn.Module, task: Task, rt: Any, run: Run) -> tuple[nn.Module, nn.Module]:
    """The model on the device (SyncBatchNorm, channels_last) and its DDP wrapper (or itself)."""
    model = model.to(run.device)
    if rt.sync_bn and run.dist.enabled:
        if run.device.type != "cuda":
            raise ConfigError(
                "runtime.sync_bn=true needs CUDA devices (torch's SyncBatchNorm has no CPU "
                "kernel); on CPU freeze batch norm instead (model.norm=frozen_bn or eval_bn)"
            )
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if not run.dist.enabled:
        return model, model
    ignored = task.ddp_ignored_parameters(model)
    if ignored:
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            model, ignored
        )
    device_ids = [run.device.index] if run.device.type == "cuda" else None
    return model, nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def train_step(
    task: Task,
    ddp: nn.Module,
    batch: dict[str, Any],
    state: TrainingState,
    run: Run,
    *,
    accumulate: int,
    sync: bool,
    skip_backward: bool,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, bool]:
    """One micro-batch: forward under autocast, the loss terms on the host, and (when every
    rank's loss is finite and the window is not already bad) the scaled backward pass.
    ``sync=False`` skips DDP's gradient all-reduce (accumulation). Returns the losses, their
    values ``(T,)`` on the CPU and whether they were finite on every rank."""
    no_sync = ddp.no_sync() if run.dist.enabled and not sync else contextlib.nullcontext()
    with no_sync:
        with autocast(run.device, run.cfg.runtime.amp):
            losses = task.training_losses(ddp, batch)
        loss = sum(losses.values())
        terms = torch.stack([v.detach().float() for v in losses.values()]).cpu()
        finite = bool(torch.isfinite(terms).all())
        if run.dist.enabled:
            finite = not D.any_rank(not finite, run.device)
        if finite and not skip_backward:
            state.scaler.scale(loss / accumulate).backward()
    return losses, terms, finite


def optimizer_step(
    state: TrainingState, clip_grad_norm: float | None, log_grad_norms: bool = False
) -> dict[str, torch.Tensor]:
    """Unscale and clip (optionally), step, update the scaler and the EMA. With
    ``log_grad_norms``, returns the per-stage gradient norms the backward pass gave (after
    unscaling, before clipping)."""
    norms: dict[str, torch.Tensor] = {}
    if clip_grad_norm or log_grad_norms:
        state.scaler.unscale_(state.optimizer)
    if log_grad_norms:
        norms = stage_grad_norms(state.model)
    if clip_grad_norm:
        trainable = [p for p in state.model.parameters() if p.requires_grad]
        torch.nn.utils.clip_grad_norm_(trainable, clip_grad_norm)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.optimizer.zero_grad(set_to_none=True)
    if state.ema is not None:
        state.ema.update(state.model)
    return norms


def skip_step(state: TrainingState, losses: dict, terms: torch.Tensor, run: Run) -> None:
    """A step whose loss was not finite: drop the gradients, count it, stop after too many."""
    progress, rt = state.progress, run.cfg.runtime
    lr = state.optimizer.defaults["lr"]  # the peak (batch-scaled) learning rate
    state.optimizer.zero_grad(set_to_none=True)
    progress.skipped_steps += 1
    progress.nonfinite_in_a_row += 1
    shown = ", ".join(f"{k}={v:.4g}" for k, v in zip(losses, terms.tolist()))
    run.say(f"iteration {progress.iteration}: non-finite loss ({shown}); step skipped")
    if progress.nonfinite_in_a_row >= rt.max_nonfinite:
        raise NonFiniteLossError(
            f"training stopped at iteration {progress.iteration}: the loss was non-finite for "
            f"{progress.nonfinite_in_a_row} consecutive steps ({shown}). Try a lower learning "
            f"rate (--set optim.lr={lr / 10:g}), fp32 (--amp off), or gradient clipping "
            "(--set optim.clip_grad_norm=10)"
        )


def log_record(
    run: Run, state: TrainingState, window: ThroughputWindow, names: list[str], lr: float
) -> dict[str, Any]:
    """The metrics record of the window since the last one (losses averaged over ranks)."""
    progress = state.progress
    record: dict[str, Any] = {"iteration": progress.iteration, "epoch": progress.epoch, "lr": lr}
    mean = window.mean_terms()
    if mean is not None:
        record |= D.all_reduce_mean(dict(zip(names, mean)) | {"loss": sum(mean)}, run.device)
    record |= window.rates(run.dist.world_size) | {
        "peak_memory_gb": peak_memory_gb(run.device),
        "skipped_steps": progress.skipped_steps,
    }
    return record | run.grad_norms  # of the latest step, when runtime.log_grad_norms is on


def describe(record: dict[str, Any]) -> str:
    return (
        f"loss {record.get('loss', float('nan')):.4f} lr {record['lr']:.3g} "
        f"{record['images_per_s']:.1f} img/s data {100 * record['data_time_share']:.0f}% "
        f"mem {record['peak_memory_gb']:.2f} GB"
    )


def run_evaluation(run: Run, state: TrainingState) -> dict[str, float] | None:
    """Evaluate the model (and its EMA), log the metrics, write ``best.pt`` on a new best."""
    if run.evaluator is None:
        return None
    progress, task, cfg = state.progress, run.task, run.cfg
    val_set, evaluator, ctx = run.val_set, run.evaluator, run.ctx
    t0 = time.perf_counter()
    scores = evaluate(task, state.model, val_set, evaluator, cfg, ctx)
    metrics = {f"val/{k}": v for k, v in scores.items()}
    if state.ema is not None:
        scores = evaluate(task, state.ema.module, val_set, evaluator, cfg, ctx)
        metrics |= {f"val_ema/{k}": v for k, v in scores.items()}
    run.logger.log({"iteration": progress.iteration, "epoch": progress.epoch, **metrics})
    name = getattr(cfg.runtime, "best_metric", "") or task.main_metric
    key = f"{'val_ema' if state.ema is not None else 'val'}/{name}"
    value = metrics.get(key)
    if value is None and name != task.main_metric:
        known = sorted(k.split("/", 1)[1] for k in metrics if not k.startswith("val_ema/"))
        raise ConfigError(
            f"runtime.best_metric={name!r} is not a metric of this evaluation; choose one of "
            f"{known}"
        )
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    took = time.perf_counter() - t0
    run.say(f"evaluation at iteration {progress.iteration} ({took:.1f} s): {shown}")
    if value is not None and (progress.best_metric is None or value > progress.best_metric):
        progress.best_metric, progress.best_iteration = float(value), progress.iteration
        run.save(state, "best.pt")
        run.say(f"new best {key} = {value:.4f}: wrote {run.run_dir / 'best.pt'}")
    return metrics


def setup(
    task: Task, cfg: Any, resume: str | Path | None
) -> tuple[Run, TrainingState, nn.Module, Dataset]:
    """Process, data, model, optimizer state (restored from ``resume``), run folder, logger,
    evaluator: everything training needs, in that order."""
    rt = cfg.runtime
    dist = D.init_distributed(resolve_device(rt.device).type)
    device = resolve_device(rt.device, dist)
    resumed = load_checkpoint(resume, task=task.name, order=RESUME_ORDER) if resume else None
    seed_everything(rt.seed + dist.rank, rt.deterministic)
    train_set = task.build_train_set(cfg)
    cfg = task.finalize_config(cfg, train_set)
    rt = cfg.runtime
    run = Run(task, cfg, dist, device, Path(rt.output_dir))
    model, ddp = prepare_model(task.build_model(cfg), task, rt, run)
    state = build_training_state(model, cfg, run)
    if resumed is not None:
        state.restore(resumed, dist.rank)
        p = state.progress
        run.say(
            f"resumed from {resumed['path']} at iteration {p.iteration} (epoch {p.epoch}, "
            f"batch {p.batch_in_epoch})"
        )
    if dist.is_main:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, run.run_dir / "config.yaml")
        if resumed is None:  # a new run: no best.pt of an earlier run may stand for it
            (run.run_dir / "best.pt").unlink(missing_ok=True)
    run.logger = MetricsLogger(run.run_dir, enabled=dist.is_main, tensorboard=rt.tensorboard)
    # a resumed run drops what the interrupted one logged after its checkpoint; a new run in
    # the same folder starts a new log
    run.logger.truncate_after(state.progress.iteration if resumed is not None else -1)
    run.meta = task.checkpoint_meta(cfg, train_set)
    run.val_set = task.build_val_set(cfg)
    run.evaluator = task.build_evaluator(cfg, run.val_set) if run.val_set is not None else None
    run.ctx = EvalContext(
        device=device, amp=rt.amp, dist=dist, channels_last=rt.channels_last, cfg=cfg
    )
    return run, state, ddp, train_set


def train_epoch(
    run: Run,
    state: TrainingState,
    ddp: nn.Module,
    train_set: Dataset,
    window: ThroughputWindow,
    stop: StopSignal,
) -> str | None:
    """The rest of the current epoch (from ``progress.batch_in_epoch``): steps, logging,
    checkpoints and evaluations on their periods. Returns the signal that stopped it, if any."""
    task, cfg, dist, device = run.task, run.cfg, run.dist, run.device
    rt, sched, progress = cfg.runtime, cfg.schedule, state.progress
    accumulate = max(1, cfg.optim.accumulate_steps)
    batches = epoch_batches(
        len(train_set),
        cfg.data.batch_size,
        seed=rt.seed,
        epoch=progress.epoch,
        rank=dist.rank,
        world_size=dist.world_size,
        group_ids=task.group_ids(train_set),
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
    # A live bar on a terminal; in logs (no TTY), one line per log record instead.
    show_bar = dist.is_main and rt.progress and sys.stderr.isatty()
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
    stopped_by, epoch_done = None, True
    for batch in loader:
        window.data_time += time.perf_counter() - t_ready
        if micro == 0 and stop.received and not dist.enabled:  # stop before the step
            stopped_by, epoch_done = stop.received, False
            break
        batch = to_device(batch, device, rt.channels_last)
        micro += 1
        last_micro = micro == accumulate
        losses, terms, finite = train_step(
            task,
            ddp,
            batch,
            state,
            run,
            accumulate=accumulate,
            sync=last_micro,
            skip_backward=window_bad,
        )
        window_bad |= not finite
        window.images += task.batch_size_of(batch)
        progress.batch_in_epoch += 1
        bar.update(1)
        if not last_micro:
            t_ready = time.perf_counter()
            continue
        current_lr = state.optimizer.param_groups[0]["lr"]
        if window_bad:
            skip_step(state, losses, terms, run)
        else:
            progress.nonfinite_in_a_row = 0
            run.grad_norms = optimizer_step(state, cfg.optim.clip_grad_norm, rt.log_grad_norms)
            window.add_step(terms)
        state.scheduler.step()
        progress.iteration += 1
        micro, window_bad = 0, False

        it = progress.iteration
        mean = window.mean_terms()
        if mean is not None:
            bar.set_postfix_str(f"loss {sum(mean):.4f} lr {current_lr:.3g}", refresh=False)
        if it % rt.log_period == 0 or it == 1 or it == sched.iterations:
            record = log_record(run, state, window, list(losses), current_lr)
            run.logger.log(record)
            if rt.progress and not show_bar:
                run.say(f"iteration {it}/{sched.iterations} {describe(record)}")
            bar.set_postfix_str(describe(record))
            window.reset()
        stop_now = stop.received is not None
        if dist.enabled:
            stop_now = D.any_rank(stop_now, device)
        if stop_now:
            stopped_by, epoch_done = stop.received or "SIGTERM", False
            break
        # evaluate first: last.pt then holds the best score up to this iteration, so a run
        # resumed from it compares its next score with the right best
        if rt.eval_period and it % rt.eval_period == 0:
            run.evaluate(state)
        if it % rt.checkpoint_period == 0:
            run.save(state, "last.pt")
        if it >= sched.iterations:
            epoch_done = progress.batch_in_epoch >= len(batches)
            break
        t_ready = time.perf_counter()
    bar.close()
    if epoch_done:
        progress.epoch += 1
        progress.batch_in_epoch = 0
        if not rt.eval_period and progress.iteration < sched.iterations:
            run.evaluate(state)
    return stopped_by


def train(task: Task, cfg: Any, *, resume: str | Path | None = None) -> TrainResult:
    """Train ``task`` with ``cfg``; ``resume`` is a checkpoint (or run folder) to continue."""
    run, state, ddp, train_set = setup(task, cfg, resume)
    rt, sched, progress = run.cfg.runtime, run.cfg.schedule, state.progress
    window, stopped_by = ThroughputWindow(), None
    train_start, start_iteration = time.perf_counter(), progress.iteration
    run.saved_at = progress.iteration
    with StopSignal() as stop:
        while progress.iteration < sched.iterations and stopped_by is None:
            epoch = progress.epoch
            stopped_by = train_epoch(run, state, ddp, train_set, window, stop)
            if progress.epoch == epoch:
                continue  # stopped (or out of iterations) inside the epoch
            # at epoch ends too, unless epochs are tiny (then every checkpoint_period / 10)
            if progress.iteration - run.saved_at >= max(1, rt.checkpoint_period // 10):
                run.save(state, "last.pt")
            rate = (time.perf_counter() - train_start) / max(
                progress.iteration - start_iteration, 1
            )
            eta = format_duration(rate * (sched.iterations - progress.iteration))
            run.say(
                f"epoch {progress.epoch - 1} done: iteration {progress.iteration}/"
                f"{sched.iterations}, {progress.skipped_steps} skipped steps, eta {eta}"
            )
    if stopped_by is not None:
        run.save(state, "last.pt")
        run.say(
            f"stopped by {stopped_by} at iteration {progress.iteration}; wrote "
            f"{run.run_dir / 'last.pt'}; continue with --resume"
        )
    else:
        run.evaluate(state)
        run.save(state, "last.pt")
        if run.dist.is_main:
            if run.evaluator is not None and run.metrics:
                text = run.evaluator.write_report(run.run_dir / "eval")
                if text:
                    print(text)
            plot_run(run.run_dir)
    run.logger.close()
    D.barrier()
    return TrainResult(
        run_dir=run.run_dir,
        iteration=progress.iteration,
        stopped_by=stopped_by,
        metrics=run.metrics,
        best_metric=progress.best_metric,
        skipped_steps=progress.skipped_steps,
    )


__all__ = ["TrainResult", "load_checkpoint", "train", "unwrap"]
