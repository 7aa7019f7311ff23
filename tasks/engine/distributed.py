"""torchrun / DistributedDataParallel plumbing: small functions a test can call alone."""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str, *, timeout: timedelta | None = None) -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op when alone).

    NCCL on GPU, gloo on CPU. Multi-node runs use torchrun's ``--nnodes``/``--rdzv-endpoint``.
    ``timeout`` bounds how long a collective call waits (torch's default otherwise).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend, **({"timeout": timeout} if timeout else {}))
    return info


def destroy_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def current() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
        )
    return DistInfo()


def barrier() -> None:
    if current().enabled:
        dist.barrier()


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average a dict of floats over ranks (identity when alone)."""
    if not current().enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= current().world_size
    return dict(zip(keys, t.tolist()))


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (e.g. a confusion matrix); identity when alone."""
    if current().enabled:
        dist.all_reduce(tensor)
    return tensor


def any_rank(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is true on any rank (used to skip a step on all ranks together)."""
    if not current().enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` when alone).

    Evaluation gathers predictions with this before scoring, so that metrics cover the whole
    dataset and not one shard.
    """
    info = current()
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    if not current().enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def object_size(obj: Any) -> int:
    """Pickled size in bytes (what a DataLoader worker receives)."""
    return len(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
