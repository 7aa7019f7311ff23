"""Where and how a process runs: the device, seeds, mixed precision, batches on the device,
and the stop signals. Small functions every task, predictor and benchmark shares."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import threading
from typing import Any

import numpy as np
import torch
from torch import nn

from . import distributed as D
from .errors import ConfigError

log = logging.getLogger("resvision.train")

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(amp: str) -> torch.dtype | None:
    """The autocast dtype of an ``amp`` setting: ``bf16``, ``fp16`` or ``off`` (None)."""
    if amp not in (*AMP_DTYPES, "off"):
        raise ConfigError(f"amp={amp!r}: choose one of off, bf16, fp16")
    return AMP_DTYPES.get(amp)


def autocast(device: torch.device | str, amp: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for an ``amp`` setting on ``device``; a no-op for ``off``."""
    dtype = amp_dtype(amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def resolve_device(spec: str, dist: D.DistInfo | None = None) -> torch.device:
    """``auto`` -> CUDA when available (``cuda:LOCAL_RANK`` under torchrun), else CPU."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"device {spec!r} is not a device: use auto, cpu, cuda or cuda:N"
        ) from None
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


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class StopSignal:
    """SIGINT/SIGTERM ask a loop to finish what it holds and stop (training: a checkpoint);
    a second SIGINT stops at once. ``doing`` is what the warning says happens next."""

    def __init__(self, doing: str = "finishing this step, writing a checkpoint, stopping") -> None:
        self.received: str | None = None
        self.doing = doing
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
        log.warning("%s received: %s", self.received, self.doing)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
