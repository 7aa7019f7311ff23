"""The degradation experiment (``resvision depth degradation``): He et al. 2015, Figure 6.

Plain and residual CIFAR nets of several depths (``cifar_resnet{depth}`` with and without
``plain=True``) are trained on the built-in synthetic 32 px set (``datasets.classification``)
with one recipe: the same data order, the same seed for every net, SGD with momentum 0.9 and
weight decay 1e-4, a short linear warm-up (He et al. warm ResNet-110 up at 0.01), then a
constant learning rate, no augmentation, no zero-initialised branches (He et al.'s
initialisation; ``zero_init_residual`` turns them on for the residual nets). It records the
training loss and error of every iteration and, at the end, the error on a held-out set drawn
the same way. The figure has one panel for the plain nets and one for the residual nets, one
curve per depth, as in the paper: with plain nets the deeper ones are worse, with residual nets
they are not.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from resvision.backbones import create_backbone
from resvision.backbones.cifar import BASIC_DEPTHS
from resvision.datasets.classification import CLASS_NAMES, SyntheticClassification
from resvision.tasks.engine.plots import save_figure


@dataclass
class DegradationConfig:
    """The recipe shared by every net of the experiment."""

    depths: tuple[int, ...] = (20, 56, 110)  # of cifar_resnet{depth}: 20 32 44 56 110 1202
    iterations: int = 400  # sized for a 2-core CPU: about 15 minutes for 20, 56, 110
    batch_size: int = 32
    lr: float = 0.05  # He et al.: 0.1 for 128 images
    warmup_iterations: int = 100  # linear from lr / 10
    momentum: float = 0.9
    weight_decay: float = 1e-4
    num_train: int = 5000
    num_val: int = 1000
    size: int = 32
    seed: int = 0
    threads: int | None = None  # torch CPU threads (None: torch's default)
    variants: tuple[str, ...] = ("plain", "residual")
    zero_init_residual: bool = False  # residual nets only (He et al. 2015 did not)


@dataclass
class Curve:
    """One net's training record."""

    depth: int
    plain: bool
    loss: list[float] = field(default_factory=list)  # per iteration (the batch's mean loss)
    error: list[float] = field(default_factory=list)  # per iteration (the batch's error rate)
    val_error: float = math.nan
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return f"{'plain' if self.plain else 'ResNet'}-{self.depth}"

    def final_loss(self, fraction: float = 0.1) -> float:
        """Mean training loss over the last ``fraction`` of the iterations."""
        tail = max(1, int(len(self.loss) * fraction))
        return float(np.mean(self.loss[-tail:]))

    def final_error(self, fraction: float = 0.1) -> float:
        tail = max(1, int(len(self.error) * fraction))
        return float(np.mean(self.error[-tail:]))


class _Classifier(nn.Module):
    """The CIFAR net's trunk, global average pooling and a linear layer (He et al.)."""

    def __init__(self, depth: int, plain: bool, zero_init_residual: bool = False) -> None:
        super().__init__()
        self.backbone = create_backbone(
            f"cifar_resnet{depth}",
            out_levels=("c4",),
            plain=plain,
            zero_init_residual=zero_init_residual and not plain,
        )
        self.fc = nn.Linear(self.backbone.feature_specs[-1].channels, len(CLASS_NAMES))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.backbone.normalization.normalize(images)
        return self.fc(self.backbone(x)["c4"].mean((2, 3)))


def check_config(cfg: DegradationConfig) -> None:
    bad = [d for d in cfg.depths if d not in BASIC_DEPTHS]
    if not cfg.depths or bad:
        raise ValueError(
            f"depths={list(cfg.depths)}: choose from the CIFAR ResNets' depths {list(BASIC_DEPTHS)}"
        )
    if not cfg.variants or set(cfg.variants) - {"plain", "residual"}:
        raise ValueError(f"variants={list(cfg.variants)}: choose plain, residual or both")
    for name in ("iterations", "batch_size", "num_train", "num_val", "size"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name}={getattr(cfg, name)} must be at least 1")
    if not 0 <= cfg.warmup_iterations < cfg.iterations:
        raise ValueError(
            f"warmup_iterations={cfg.warmup_iterations} must be in [0, iterations={cfg.iterations})"
        )


def _batches(num: int, batch_size: int, iterations: int, seed: int) -> list[np.ndarray]:
    """The same sequence of batch indices for every net (epochs of seeded permutations)."""
    rng = np.random.default_rng(seed)
    order: list[int] = []
    while len(order) < iterations * batch_size:
        order += rng.permutation(num).tolist()
    return [np.array(order[i * batch_size : (i + 1) * batch_size]) for i in range(iterations)]


def train_one(
    depth: int,
    plain: bool,
    data: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    cfg: DegradationConfig,
    *,
    progress: Callable[[Curve, int], None] | None = None,
) -> Curve:
    """Train ``cifar_resnet{depth}`` (``plain``: without shortcuts) with the shared recipe."""
    torch.manual_seed(cfg.seed)
    model = _Classifier(depth, plain, cfg.zero_init_residual).train()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    images, labels = data
    curve, start = Curve(depth, plain), time.perf_counter()
    for it, index in enumerate(_batches(len(labels), cfg.batch_size, cfg.iterations, cfg.seed)):
        warm = cfg.warmup_iterations
        scale = 0.1 + 0.9 * it / warm if it < warm else 1.0
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * scale
        x, y = images[index], labels[index]
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = loss.item()
        curve.loss.append(value if math.isfinite(value) else math.inf)
        curve.error.append(float((logits.argmax(1) != y).float().mean()))
        if progress is not None:
            progress(curve, it + 1)
    model.eval()
    with torch.no_grad():
        wrong = sum(
            int((model(x).argmax(1) != y).sum())
            for x, y in zip(val[0].split(256), val[1].split(256))
        )
    curve.val_error = wrong / len(val[1])
    curve.seconds = time.perf_counter() - start
    return curve


def run(
    cfg: DegradationConfig, *, progress: Callable[[Curve, int], None] | None = None
) -> list[Curve]:
    """Train every (depth, plain/residual) pair; plain nets first, shallow to deep."""
    check_config(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data = SyntheticClassification(cfg.num_train, size=cfg.size, seed=cfg.seed).tensors()
    val = SyntheticClassification(cfg.num_val, size=cfg.size, seed=cfg.seed + 1).tensors()
    return [
        train_one(depth, plain, data, val, cfg, progress=progress)
        for plain in (True, False)
        if ("plain" if plain else "residual") in cfg.variants
        for depth in sorted(cfg.depths)
    ]


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Moving average over ``window`` iterations (the batch losses are noisy)."""
    values = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(values) < window:
        return values
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def summary_rows(curves: list[Curve]) -> list[list[object]]:
    return [
        [c.label, c.depth, c.final_loss(), 100 * c.final_error(), 100 * c.val_error, c.seconds]
        for c in curves
    ]


SUMMARY_HEADERS = (
    "net",
    "depth",
    "train loss (last 10%)",
    "train error % (last 10%)",
    "held-out error %",
    "time (s)",
)


def verdict(curves: list[Curve]) -> list[str]:
    """Plain words: does deeper do worse (plain) and no worse (residual), on the final loss?"""
    lines = []
    for plain in (True, False):
        chosen = sorted((c for c in curves if c.plain == plain), key=lambda c: c.depth)
        if len(chosen) < 2:
            continue
        losses = [c.final_loss() for c in chosen]
        names = ", ".join(f"{c.label} {loss:.3f}" for c, loss in zip(chosen, losses))
        worse = all(b > a for a, b in pairwise(losses))
        better_or_equal = all(b <= a * 1.05 for a, b in pairwise(losses))
        kind = "plain" if plain else "residual"
        if plain:
            word = "deeper is worse" if worse else "deeper is NOT consistently worse"
        else:
            word = "deeper is no worse" if better_or_equal else "deeper is worse here too"
        lines.append(f"{kind}: {word} (final training loss {names})")
    return lines


def plot(curves: list[Curve], path: str | os.PathLike, *, window: int = 20) -> Path:
    """He et al.'s Figure 6 layout: plain nets left, residual nets right, loss per depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in (True, False) if any(c.plain == p for c in curves)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), sharey=True)
    axes = np.atleast_1d(axes)
    colours = plt.cm.viridis(np.linspace(0, 0.85, len({c.depth for c in curves})))
    depth_colour = dict(zip(sorted({c.depth for c in curves}), colours))
    for ax, plain in zip(axes, panels):
        for c in sorted((c for c in curves if c.plain == plain), key=lambda c: c.depth):
            y = smooth(c.loss, window)
            x = np.arange(len(y)) + (len(c.loss) - len(y)) + 1
            ax.plot(x, y, color=depth_colour[c.depth], label=f"{c.label}")
        ax.set_title("plain nets" if plain else "residual nets (ResNet)")
        ax.set_xlabel("iteration")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    axes[0].set_ylabel(f"training loss (moving mean of {window} iterations)")
    fig.tight_layout()
    return save_figure(fig, path)


def save_json(curves: list[Curve], cfg: DegradationConfig, path: str | os.PathLike) -> Path:
    """The config and every curve (per-iteration loss and error), for replotting."""
    path = Path(path)
    record = {"config": asdict(cfg), "curves": [asdict(c) for c in curves]}
    path.write_text(json.dumps(record))
    return path
