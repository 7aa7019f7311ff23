"""Gradient norms block by block, with and without shortcuts (``resvision depth gradients``).

One forward and backward pass of a freshly initialised backbone (He et al.'s initialisation, no
zero-initialised branches: the question is what the shortcut itself does) with a linear
classifier on its pooled last level and a cross-entropy loss. For every residual block, first to
last, it records the L2 norm of the gradient of the block's parameters and of the gradient
reaching the block's input. The same net without shortcuts (``plain=True``, the CIFAR families)
starts from the same random state.

By default batch norm runs as in training (batch statistics). In a deep plain net the gradient
then grows by orders of magnitude from the last block to the first (it explodes toward the
input, the ill-conditioning behind the degradation problem: He et al. 2015 note that batch norm
keeps the plain nets' gradients from vanishing); with ``eval_bn`` (running statistics, i.e. no
normalisation at initialisation) it shrinks toward the input instead. The residual net keeps its
gradients within about an order of magnitude either way in training mode.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from resvision.backbones import Backbone, create_backbone
from resvision.datasets.classification import CLASS_NAMES, SyntheticClassification
from resvision.datasets.images import list_images, read_rgb
from resvision.tasks.engine.plots import save_figure


@dataclass
class BlockGradient:
    """One residual block's gradient norms (L2)."""

    index: int  # 0 = first block
    stage: str  # level name of the block's stage (c2, ...)
    params: float  # of the gradient of the block's parameters
    input: float  # of the gradient of the loss with respect to the block's input


def default_size(name: str) -> int:
    """8 cells across the last level: 32 px for the CIFAR nets, 256 for ImageNet ResNets."""
    with torch.device("meta"):
        return 8 * create_backbone(name, out_levels=("c2",)).output_stride


def load_batch(
    images: str | os.PathLike | None, *, size: int, batch_size: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images (N, 3, size, size) float in [0, 255], labels (N,))``.

    From the photos in a folder (resized to ``size`` x ``size``; random labels, which only set
    the loss's target), or from the built-in synthetic 32 px set (resized when ``size`` != 32).
    """
    if images is None:
        x, y = SyntheticClassification(batch_size, size=size, seed=seed).tensors()
    else:
        paths = list_images(images)[:batch_size]
        if not paths:
            raise ValueError(f"no image files in {str(images)!r}; pass a folder of photos")
        import cv2

        arrays = [
            cv2.resize(read_rgb(p), (size, size), interpolation=cv2.INTER_AREA) for p in paths
        ]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
        y = torch.from_numpy(np.random.default_rng(seed).integers(0, len(CLASS_NAMES), len(x)))
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x, y


def block_gradients(
    model: Backbone, images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0
) -> list[BlockGradient]:
    """Gradient norms of every residual block of ``model`` after one forward/backward pass.

    ``images``: ``(N, 3, H, W)`` float in [0, 255] (normalised here with the model's statistics).
    """
    last = model.feature_specs[-1]
    torch.manual_seed(seed)
    classifier = nn.Linear(last.channels, len(CLASS_NAMES))
    blocks = model.residual_blocks()
    stage_of = {id(b): lv for lv, seq in model.stage_blocks().items() for b in seq}
    input_norms: dict[int, float] = {}

    def keep_input_gradient(block: nn.Module, args: tuple) -> None:
        if args[0].requires_grad:
            args[0].register_hook(lambda g: input_norms.__setitem__(id(block), g.norm().item()))

    hooks = [b.register_forward_pre_hook(keep_input_gradient) for b in blocks]
    try:
        model.zero_grad(set_to_none=True)
        features = model(model.normalization.normalize(images))[last.name]
        F.cross_entropy(classifier(features.mean((2, 3))), labels).backward()
    finally:
        for h in hooks:
            h.remove()
    rows = []
    for i, block in enumerate(blocks):
        grads = [p.grad.flatten() for p in block.parameters() if p.grad is not None]
        params = float(torch.cat(grads).norm()) if grads else 0.0
        rows.append(BlockGradient(i, stage_of[id(block)], params, input_norms.get(id(block), 0.0)))
    return rows


def compare(
    name: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    plain: bool = False,
    eval_bn: bool = False,
    seed: int = 0,
) -> dict[str, list[BlockGradient]]:
    """``{"residual": [...], "plain": [...]}`` (``plain`` only when asked) for backbone ``name``,
    both built from the same seed with all their levels up to the last."""
    results = {}
    for variant in ("residual", "plain") if plain else ("residual",):
        torch.manual_seed(seed)
        with torch.device("meta"):
            last = create_backbone(name, out_levels=("c2",)).family_specs[-1].name
        model = create_backbone(
            name, out_levels=(last,), zero_init_residual=False, plain=variant == "plain"
        )
        model.train(not eval_bn)
        results[variant] = block_gradients(model, images, labels, seed=seed)
    return results


def ratios(rows: list[BlockGradient]) -> dict[str, float]:
    """First block / last block, for the parameter and input gradients."""
    first, last = rows[0], rows[-1]
    return {
        "params": first.params / last.params if last.params else math.inf,
        "input": first.input / last.input if last.input else math.inf,
    }


def span_decades(values: list[float]) -> float:
    """log10(max / min) of the positive values: how many orders of magnitude they span."""
    positive = [v for v in values if v > 0]
    return math.log10(max(positive) / min(positive)) if positive else 0.0


def format_report(results: dict[str, list[BlockGradient]], *, max_rows: int = 40) -> str:
    """The table (every block, or ``max_rows`` evenly spaced ones) and the ratios."""
    from resvision.tasks.engine.table import format_table

    variants = list(results)
    rows = results[variants[0]]
    step = max(1, math.ceil(len(rows) / max_rows))
    shown = sorted(set(range(0, len(rows), step)) | {len(rows) - 1})
    headers = ["block", "stage"]
    for v in variants:
        headers += [f"{v} |grad params|", f"{v} |grad input|"]
    table = []
    for i in shown:
        line: list[object] = [i, rows[i].stage]
        for v in variants:
            line += [f"{results[v][i].params:.3e}", f"{results[v][i].input:.3e}"]
        table.append(line)
    text = [format_table(headers, table)]
    if step > 1:
        text.append(f"({len(rows)} blocks; one in {step} shown, all of them in the plot)")
    for v in variants:
        r = ratios(results[v])
        text.append(
            f"{v}: first/last block = {r['params']:.3g} (parameters), {r['input']:.3g} (input); "
            f"the parameter gradients span {span_decades([b.params for b in results[v]]):.1f} "
            "orders of magnitude"
        )
    return "\n".join(text)


def plot(results: dict[str, list[BlockGradient]], path: str | os.PathLike, title: str) -> Path:
    """Two log-scale panels (parameter and input gradients by block), one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, field, label in zip(
        axes,
        ("params", "input"),
        ("|grad| of the block's parameters", "|grad| at the block's input"),
    ):
        for variant, rows in results.items():
            values = [max(getattr(b, field), 1e-30) for b in rows]
            ax.plot(
                range(len(rows)),
                values,
                label=variant,
                marker="o" if len(rows) < 60 else None,
                markersize=3,
            )
        ax.set_yscale("log")
        ax.set_xlabel("block (input side -> output side)")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)
