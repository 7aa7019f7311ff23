"""``resvision benchmark segmentation``: training and inference images/s of resvision's default
recipe against segmentation-models-pytorch's same architecture (naive fp32, and bf16 +
channels_last on a GPU), in one run, with a check that both compute the same function."""

from __future__ import annotations

import argparse

import torch
from torch import nn

from resvision.tasks.engine.config import apply_overrides
from resvision.tasks.engine.runtime import autocast, resolve_device
from resvision.tasks.engine.table import format_table
from resvision.tasks.segmentation.config import SegConfig
from resvision.tasks.segmentation.model import build_model

from .timing import best_of_rounds, device_name, items_per_second, sgd_train_step

SMP_CLASSES = {
    "unet": "Unet",
    "deeplabv3plus": "DeepLabV3Plus",
    "deeplabv3": "DeepLabV3",
    "fpn": "FPN",
}


def benchmark(
    *,
    arch: str = "unet",
    backbone: str = "resnet50",
    batch: int = 16,
    size: int = 512,
    steps: int = 10,
    warmup: int = 3,
    rounds: int = 1,
    device: str = "auto",
) -> list[dict]:
    """Training and inference images/s: resvision's default recipe vs smp's model, same shapes."""
    import segmentation_models_pytorch as smp

    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    num_classes = 21
    output_stride = "16" if arch.startswith("deeplab") else "none"
    cfg = apply_overrides(
        SegConfig(),
        [
            f"model.arch={arch}",
            f"model.backbone={backbone}",
            f"model.num_classes={num_classes}",
            "model.aux_weight=0",
            f"model.output_stride={output_stride}",
            f"model.head_kernel={3 if arch == 'unet' else 1}",
        ]
        + (["model.dilation=uniform", "model.align_corners=true"] if output_stride == "16" else []),
    )
    torch.manual_seed(0)
    images = (torch.rand(batch, 3, size, size, device=dev) * 255).round()
    targets = torch.randint(0, num_classes, (batch, size, size), device=dev)
    ours = build_model(cfg).to(dev)
    kwargs = {"encoder_output_stride": 16} if arch.startswith("deeplab") else {}
    smp_class = getattr(smp, SMP_CLASSES[arch])
    theirs = smp_class(backbone, encoder_weights=None, classes=num_classes, **kwargs).to(dev)
    normalized = ours.backbone.normalization.normalize(images)
    ce = nn.CrossEntropyLoss(ignore_index=255)

    def our_loss(model, x):
        return sum(model(x, targets).values())

    def smp_loss(model, x):
        return ce(model(x).float(), targets)

    # resvision's default GPU recipe: bf16 autocast + channels_last (fp32 on CPU, where bf16
    # autocast is usually slower)
    our_amp, our_cl = ("bf16", True) if cuda else ("off", False)
    recipe = f"{our_amp}{' + channels_last' if our_cl else ''}"
    setups = [
        (
            f"resvision {arch}-{backbone} default ({recipe})",
            ours,
            images,
            our_loss,
            lambda x: ours(x)["out"],
            our_amp,
            our_cl,
        ),
        ("smp naive fp32", theirs, normalized, smp_loss, theirs, "off", False),
    ]
    if cuda:
        setups.append(
            ("smp best (bf16 + channels_last)", theirs, normalized, smp_loss, theirs, "bf16", True)
        )

    def measure(setup) -> tuple[float, float]:
        _, model, x, loss_fn, infer, amp, cl = setup
        fmt = torch.channels_last if cl else torch.contiguous_format
        model = model.to(memory_format=fmt)
        x = x.contiguous(memory_format=fmt)
        step = sgd_train_step(model, lambda: loss_fn(model, x), amp=amp, device=dev)
        train = items_per_second(step, items=batch, steps=steps, device=dev, warmup=warmup)
        model.eval()
        with torch.no_grad(), autocast(dev, amp):
            rate = items_per_second(
                lambda: infer(x), items=batch, steps=steps, device=dev, warmup=warmup
            )
        return train, rate

    best = best_of_rounds(setups, rounds, measure)
    with torch.no_grad():  # the same function: smp's model holding our weights
        theirs.load_state_dict(
            {k.replace("backbone.", "encoder.", 1): v for k, v in ours.state_dict().items()},
            strict=False,
        )
        ours.eval(), theirs.eval()
        x = images[:1, :, :64, :64]
        same = torch.allclose(
            ours(x)["out"], theirs(ours.backbone.normalization.normalize(x)), atol=1e-3
        )
    return [
        {
            "setup": s[0],
            "train": b[0],
            "infer": b[1],
            "device": device_name(dev),
            "batch": batch,
            "size": size,
            "same_function": same,
        }
        for s, b in zip(setups, best)
    ]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="resvision benchmark segmentation",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=__doc__,
    )
    p.add_argument("--arch", choices=tuple(SMP_CLASSES), default="unet")
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--batch", type=int, default=None, help="default: 16 on GPU, 2 on CPU")
    p.add_argument("--size", type=int, default=None, help="square input (512 on GPU, 256 on CPU)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (20 on GPU, 3 on CPU)")
    p.add_argument(
        "--rounds", type=int, default=None, help="alternating rounds, best kept (2 GPU, 1 CPU)"
    )
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    cuda = resolve_device(args.device).type == "cuda"
    rows = benchmark(
        arch=args.arch,
        backbone=args.backbone,
        batch=args.batch or (16 if cuda else 2),
        size=args.size or (512 if cuda else 256),
        steps=args.steps or (20 if cuda else 3),
        warmup=5 if cuda else 1,
        rounds=args.rounds or (2 if cuda else 1),
        device=args.device,
    )
    base = rows[1]["train"]
    table = [
        [
            r["setup"],
            r["device"],
            f"{r['batch']}x{r['size']}x{r['size']}",
            r["train"],
            r["train"] / base,
            r["infer"],
        ]
        for r in rows
    ]
    headers = ("setup", "device", "batch", "train img/s", "vs smp fp32", "infer img/s")
    print(format_table(headers, table, floatfmt=".2f"))
    same = rows[0]["same_function"]
    print(f"\nsame function (smp's model holding resvision's weights): {'yes' if same else 'NO'}")
    return 0
