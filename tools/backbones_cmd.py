"""``resvision backbones [PATTERN]``: the registry as a table."""

from __future__ import annotations

import argparse

from .tasks import Command


def backbone_rows(pattern: str = "*", output_stride: int | None = None) -> list[list[object]]:
    """One row per registered backbone: name, parameters (M), levels, mean, std.

    Models are built on the meta device: no memory, no initialisation cost.
    """
    import torch

    from resvision.backbones import create_backbone, list_backbones

    names = list_backbones(pattern)
    if not names:
        raise ValueError(f"no registered backbone matches {pattern!r}; try `resvision backbones`")
    rows = []
    for name in names:
        with torch.device("meta"):
            kwargs = {} if output_stride is None else {"output_stride": output_stride}
            probe = create_backbone(name, out_levels=("c2",), **kwargs)
            levels = [s.name for s in probe.family_specs]
            model = create_backbone(name, out_levels=levels, **kwargs)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        specs = " ".join(f"{s.name}:{s.channels}/{s.stride}" for s in model.feature_specs)
        norm = model.normalization
        rows.append(
            [
                name,
                params,
                specs,
                ",".join(f"{m:.3f}" for m in norm.mean),
                ",".join(f"{s:.3f}" for s in norm.std),
            ]
        )
    return rows


HEADERS = ("name", "params (M)", "levels name:channels/stride", "mean (RGB)", "std (RGB)")


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "pattern", nargs="?", default="*", help="shell-style name pattern, e.g. 'resnet*d'"
    )
    p.add_argument(
        "--output-stride",
        type=int,
        default=None,
        help="report strides at this output stride (8/16/32; default: each family's native)",
    )


def run(args: argparse.Namespace) -> int:
    from resvision.tasks.engine.table import format_table

    print(format_table(HEADERS, backbone_rows(args.pattern, args.output_stride), floatfmt=".2f"))
    return 0


BACKBONES = Command(
    "list registered backbones with their levels and normalization",
    _arguments,
    run,
    description="List registered backbones: parameters (without classifier), each level's "
    "name, channels and stride, and the input normalization of their default weights.",
)
