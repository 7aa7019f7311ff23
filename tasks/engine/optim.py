"""Optimizers, parameter groups and learning-rate schedules by iteration."""

from __future__ import annotations

import bisect
import math

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .config import OptimConfig, ScheduleConfig
from .errors import ConfigError

NORM_TYPES = (_BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm1d, nn.InstanceNorm2d)


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool) -> list[dict]:
    """Trainable parameters split into decayed and not decayed (norm parameters and biases)."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            exempt = isinstance(module, NORM_TYPES) or name == "bias"
            (no_decay if exempt and not decay_norm_and_bias else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def scaled_lr(cfg: OptimConfig, total_batch_size: int) -> float:
    """``cfg.lr`` scaled linearly by ``total_batch_size / cfg.reference_batch_size``."""
    if not cfg.auto_scale_lr:
        return cfg.lr
    return cfg.lr * total_batch_size / cfg.reference_batch_size


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.decay_norm_and_bias)
    if not groups:
        raise ConfigError("the model has no trainable parameters (is every stage frozen?)")
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas)
    raise ConfigError(f"optim.name={cfg.name!r}: choose sgd or adamw")


def lr_factor(iteration: int, cfg: ScheduleConfig) -> float:
    """Multiplier of the peak learning rate at ``iteration`` (0-based)."""
    total = max(cfg.iterations, 1)
    if cfg.policy == "multistep":
        factor = cfg.gamma ** bisect.bisect_right(sorted(cfg.steps), iteration)
    elif cfg.policy == "cosine":
        progress = min(iteration / total, 1.0)
        factor = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (
            1 + math.cos(math.pi * progress)
        )
    elif cfg.policy == "poly":
        progress = min(iteration / total, 1.0)
        factor = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * (1 - progress) ** cfg.power
    elif cfg.policy == "constant":
        factor = 1.0
    else:
        raise ConfigError(
            f"schedule.policy={cfg.policy!r}: choose multistep, cosine, poly or constant"
        )
    if iteration < cfg.warmup_iterations:
        alpha = iteration / cfg.warmup_iterations
        factor *= cfg.warmup_factor * (1 - alpha) + alpha
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig):
    """A LambdaLR stepped once per optimizer iteration."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, cfg))
