"""What lets the deep members of the family train: stochastic depth and activation checkpointing
on the residual blocks of any registered backbone (zero-initialised branches are one call per
block: ``Backbone.zero_init_residual_branches``).

Stochastic depth (Huang et al. 2016) drops a block's residual branch for a random subset of the
batch in training, with a rate that rises linearly with depth: block ``i`` of ``n`` (first to
last built block) drops with probability ``rate * i / (n - 1)`` (timm's ResNet rule: the first
block never drops, the last drops with ``rate``). The masks come from torch's global generator,
so runs are repeatable under ``torch.manual_seed`` and the engine's resume restores them.

Activation checkpointing (MMDetection's ``with_cp``) runs every block of the chosen stages under
``torch.utils.checkpoint`` (non-reentrant): only each block's input is kept for the backward
pass, and the block's forward runs again when its gradient is needed. Two things are kept exact:

- the random state (stochastic depth masks, dropout) is replayed by ``checkpoint``;
- batch norm in training mode would update its running statistics a second time during the
  recomputation: the block's running mean, variance and ``num_batches_tracked`` are saved before
  the recomputation and restored after it, so the statistics (and the gradients) equal those of
  the same step without checkpointing, bit for bit on CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING

import torch
from timm.layers import DropPath
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

if TYPE_CHECKING:
    from .base import Backbone


# -- stochastic depth --------------------------------------------------------------------------
def drop_path_rates(rate: float, num_blocks: int) -> list[float]:
    """The linear rule: ``rate * i / (num_blocks - 1)`` for block ``i`` (0-based)."""
    if num_blocks == 1:
        return [rate]
    return [rate * i / (num_blocks - 1) for i in range(num_blocks)]


def set_drop_path_rate(model: Backbone, rate: float) -> None:
    """Give every residual block of ``model`` its stochastic-depth rate (0 removes it)."""
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate < 1:
        raise ValueError(
            f"drop_path_rate={rate!r} must be a number in [0, 1): the drop probability of the "
            "last block (e.g. 0.1 for ResNet-50, 0.2 for deeper nets)"
        )
    if rate > 0 and getattr(model, "plain", False):
        raise ValueError(
            f"drop_path_rate={rate} needs shortcuts: stochastic depth drops residual branches, "
            "and a plain net (plain=True) would drop whole layers. Use drop_path_rate=0"
        )
    blocks = model.residual_blocks()
    for block, block_rate in zip(blocks, drop_path_rates(float(rate), len(blocks))):
        assert hasattr(block, "drop_path"), f"{type(block).__name__} has no drop_path"
        block.drop_path = DropPath(block_rate) if block_rate > 0 else nn.Identity()
    model.drop_path_rate = float(rate)


# -- activation checkpointing ------------------------------------------------------------------
@contextlib.contextmanager
def _running_stats_kept(block: nn.Module) -> Iterator[None]:
    """Restore the block's batch-norm running statistics after the code inside runs."""
    norms = [
        m
        for m in block.modules()
        if isinstance(m, _BatchNorm) and m.training and m.track_running_stats
    ]
    saved = [
        (m, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
        for m in norms
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, mean, var, count in saved:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)


def _contexts(block: nn.Module) -> tuple[contextlib.AbstractContextManager, ...]:
    # (context of the first forward, context of the recomputation in the backward pass)
    return contextlib.nullcontext(), _running_stats_kept(block)


class CheckpointedBlocks(nn.Sequential):
    """A stage's ``nn.Sequential`` of blocks whose forward checkpoints each block.

    Set on an existing ``nn.Sequential`` by changing its class, so module names and state_dict
    keys stay as they are (weights load and save unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return super().forward(x)
        for block in self:
            if torch.compiler.is_compiling():
                # compiled graphs apply a buffer mutation once: the recomputation inside the
                # graph does not update the statistics again (see tests/backbones/test_depth.py)
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = checkpoint(block, x, use_reentrant=False, context_fn=partial(_contexts, block))
        return x


def block_stage_names(model: Backbone) -> list[str]:
    """The family's levels that hold residual blocks, built or not (e.g. c2..c5)."""
    built = set(model.stage_blocks())
    return [s.name for s in model.family_specs if s.name in built or s.name in model.dropped_levels]


def set_activation_checkpointing(model: Backbone, stages: bool | Sequence[str] | None) -> None:
    """Checkpoint the blocks of ``stages`` (level names; ``True`` = every built stage with
    trainable parameters; ``False``/``None``/``()`` = none) and no others.

    Raises ``ValueError`` for an unknown level, a level that holds no blocks (the stem), a stage
    that is not built (``out_levels`` stops before it) and a frozen stage (nothing in it is
    saved for the backward pass, so recomputing it would only cost time).
    """
    blocks = model.stage_blocks()
    names = block_stage_names(model)
    if stages is True:
        chosen = [
            lv for lv, seq in blocks.items() if any(p.requires_grad for p in seq.parameters())
        ]
    elif stages is None or stages is False:
        chosen = []
    else:
        if isinstance(stages, str) or not isinstance(stages, Sequence):
            raise ValueError(
                f"activation_checkpointing={stages!r}: pass true (every trainable stage) or a "
                f"list of stage names from {names}, e.g. ['c4', 'c5']"
            )
        chosen = list(dict.fromkeys(stages))
        for level in chosen:
            if level not in names:
                raise ValueError(
                    f"activation_checkpointing names {level!r}, which is not a stage with residual "
                    f"blocks of {getattr(model, 'arch', type(model).__name__)}; "
                    f"choose from {names} "
                    "(or true for all)"
                )
            if level not in blocks:
                raise ValueError(
                    f"activation_checkpointing names {level!r}, but that stage is not built: "
                    f"out_levels={model.out_levels} stops before it. Remove {level!r} or emit it"
                )
            if not any(p.requires_grad for p in blocks[level].parameters()):
                raise ValueError(
                    f"activation_checkpointing names {level!r}, which is frozen "
                    f"(frozen_stages={model.frozen_stages}): a frozen stage keeps nothing for the "
                    "backward pass, so checkpointing it saves no memory. Remove it (true skips "
                    "frozen stages)"
                )
    for level, seq in blocks.items():
        assert type(seq) in (nn.Sequential, CheckpointedBlocks), type(seq)
        seq.__class__ = CheckpointedBlocks if level in chosen else nn.Sequential
    model.checkpointed_stages = tuple(lv for lv in blocks if lv in chosen)
