"""Deterministic, resumable, sharded batching.

Training batches are lists of ``SampleKey = (index, seed)``: the seed of a sample's random
augmentation depends only on (run seed, epoch, index), never on the worker process, the number of
workers or the number of ranks. Together with a batch order that is a pure function of
(seed, epoch, rank, world size), this makes a resumed run, or a run with another
``num_workers``, see exactly the same batches.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

SampleKey = tuple[int, int]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of sample ``index`` in ``epoch`` (a 31-bit int)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0] >> 1)


def epoch_batches(
    num_items: int,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    group_ids: Sequence[int] | None = None,
    shuffle: bool = True,
) -> list[list[SampleKey]]:
    """This rank's training batches for ``epoch``.

    The shuffled index list is cut to a multiple of ``world_size`` and dealt out round-robin
    (rank r takes items r, r + W, ...), so one process with batch ``B * W`` sees the same samples
    per step as ``W`` processes with batch ``B``. With ``group_ids`` (e.g. landscape/portrait),
    batches hold one group where possible (torchvision's aspect-ratio grouping); leftovers are
    mixed. Every rank gets ``floor(items per rank / batch_size)`` batches, so DDP ranks stay in
    step.
    """
    if num_items < batch_size * world_size:
        raise ValueError(
            f"the training set has {num_items} items, fewer than one global batch "
            f"({batch_size} x {world_size} processes); lower data.batch_size"
        )
    order = np.arange(num_items)
    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(num_items)
    order = order[: num_items - num_items % world_size][rank::world_size]
    keys = [(int(i), sample_seed(seed, epoch, int(i))) for i in order]
    num_batches = len(keys) // batch_size
    if group_ids is None:
        return [keys[b * batch_size : (b + 1) * batch_size] for b in range(num_batches)]
    batches, buffers, leftovers = [], {}, []
    for key in keys:
        buf = buffers.setdefault(group_ids[key[0]], [])
        buf.append(key)
        if len(buf) == batch_size:
            batches.append(buf[:])
            buf.clear()
    for buf in buffers.values():
        leftovers += buf
    position = {key[0]: i for i, key in enumerate(keys)}
    leftovers.sort(key=lambda k: position[k[0]])
    batches += [
        leftovers[i : i + batch_size] for i in range(0, len(leftovers) - batch_size + 1, batch_size)
    ]
    assert len(batches) == num_batches
    return batches


def eval_batches(
    num_items: int, batch_size: int, *, rank: int = 0, world_size: int = 1
) -> list[list[int]]:
    """This rank's evaluation batches: items ``rank, rank + W, ...``, no padding, no repeats.

    (DistributedSampler pads with repeated items, which counts them twice in a metric.)
    """
    mine = list(range(rank, num_items, world_size))
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]


class ListBatchSampler(Sampler):
    """A batch sampler over a fixed list of batches, starting at ``start`` (for resume)."""

    def __init__(self, batches: list[list], start: int = 0) -> None:
        self.batches = batches
        self.start = start

    def __iter__(self):
        yield from self.batches[self.start :]

    def __len__(self) -> int:
        return len(self.batches) - self.start


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    # Ctrl-C and SIGTERM reach the whole process group: the main process stops training (and
    # then its workers); a worker that handled them too would print the warning once more each
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(
    dataset: Dataset,
    batches: list[list],
    *,
    collate_fn: Callable,
    num_workers: int,
    start: int = 0,
    seed: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over precomputed batches.

    It gets its own ``torch.Generator``, so creating it never consumes the global RNG (which
    would make a run resumed mid-epoch diverge from an uninterrupted one).
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_sampler=ListBatchSampler(batches, start),
        collate_fn=collate_fn,
        num_workers=num_workers,
        pin_memory=pin_memory,
        worker_init_fn=_seed_worker,
        generator=generator,
        persistent_workers=False,
    )
