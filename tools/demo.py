"""``resvision demo``: what ``make demo`` runs, on data that ships with the dependencies."""

from __future__ import annotations

import argparse

import numpy as np
import torch

from resvision.backbones import create_backbone
from resvision.tasks.table import format_table

from .backbones_cmd import HEADERS, backbone_rows

DEMO_BACKBONES = ("resnet18", "resnet50d", "resnext50_32x4d", "iresnet18")


def astronaut() -> np.ndarray:
    """scikit-image's astronaut photo (512x512 RGB uint8), shipped with the package."""
    try:
        from skimage import data
    except ImportError as e:
        raise ValueError(
            "the demo photo comes from scikit-image; install it with `pip install scikit-image` "
            "or `pip install resvision[demo]`"
        ) from e
    return data.astronaut()


def run_backbones(image: np.ndarray, names=DEMO_BACKBONES) -> list[list[object]]:
    """Run each backbone (random weights) on ``image``; one row per emitted level."""
    rows = []
    for name in names:
        torch.manual_seed(0)
        model = create_backbone(name, out_levels=None).eval()
        levels = [s.name for s in model.family_specs]
        model = create_backbone(name, out_levels=levels).eval()
        img = image
        if name.startswith("iresnet"):  # face models take 112x112 crops: take the face
            img = image[30:230, 130:330]
            img = np.asarray(
                torch.nn.functional.interpolate(
                    torch.from_numpy(img).permute(2, 0, 1)[None].float(), size=(112, 112)
                )[0].permute(1, 2, 0)
            )
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
        x = model.normalization.normalize(x)
        with torch.no_grad():
            feats = model(x)
        for spec in model.feature_specs:
            rows.append(
                [name, tuple(x.shape[-2:]), spec.name, spec.stride, tuple(feats[spec.name].shape)]
            )
    return rows


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the built-in demo (no download): backbones on a real photo",
        description="Print the backbone registry and run a few backbones on scikit-image's "
        "astronaut photo, printing each level's shape.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print("Registered backbones\n")
    print(format_table(HEADERS, backbone_rows(), floatfmt=".2f"))
    print("\nFeature maps on scikit-image's astronaut photo (random weights)\n")
    rows = run_backbones(astronaut())
    print(format_table(("backbone", "input HxW", "level", "stride", "shape"), rows))
    return 0
