"""The timing harness every benchmark shares: synchronise, warm up, timed loop, alternating
rounds with the best kept (so clock ramps and background noise favour no set-up)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import torch

from resvision.tasks.engine.runtime import autocast

T = TypeVar("T")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def items_per_second(
    step: Callable[[], object], *, items: int, steps: int, device: torch.device, warmup: int = 1
) -> float:
    """``items`` per call of ``step`` over ``steps`` timed calls, after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return steps * items / (time.perf_counter() - t0)


def best_of_rounds(
    setups: Sequence[T], rounds: int, measure: Callable[[T], Sequence[float]]
) -> list[list[float]]:
    """Measure every set-up once per round, in reverse order every other round; each keeps the
    best (largest) of each of its figures."""
    best: list[list[float] | None] = [None] * len(setups)
    for r in range(rounds):
        order: Iterable[int] = range(len(setups)) if r % 2 == 0 else reversed(range(len(setups)))
        for i in order:
            figures = list(measure(setups[i]))
            best[i] = figures if best[i] is None else [max(a, b) for a, b in zip(best[i], figures)]
    return [b or [] for b in best]


def sgd_train_step(
    model: torch.nn.Module,
    loss_fn: Callable[[], torch.Tensor],
    *,
    amp: str,
    device: torch.device,
    params: Iterable[torch.nn.Parameter] | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
) -> Callable[[], None]:
    """One optimizer step as a benchmark times it: forward under autocast, (scaled) backward,
    SGD with momentum, gradients released."""
    params = [p for p in (params or model.parameters()) if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def step() -> None:
        model.train()
        with autocast(device, amp):
            loss = loss_fn()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    return step


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
