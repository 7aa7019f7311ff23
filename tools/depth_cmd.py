"""``resvision depth gradients|degradation``: what the residual connection does, measured.

The work is in ``resvision.studies.residual``; torch is imported only when a command runs, so
``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .tasks import Command


def _depths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of depths"
        ) from None


def _gradients_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", required=True, help="a registered name, e.g. cifar_resnet110")
    p.add_argument(
        "--plain",
        action="store_true",
        help="also the same net without shortcuts, side by side (CIFAR families)",
    )
    p.add_argument(
        "--images",
        default=None,
        metavar="FOLDER",
        help="photos to use as the batch (default: the built-in synthetic shapes)",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="image side in pixels (default: 8x the output stride, 32 for the CIFAR nets)",
    )
    p.add_argument(
        "--eval-bn",
        action="store_true",
        help="batch norm with its running statistics (eval mode) instead of batch statistics",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--output",
        default=None,
        metavar="PNG",
        help="the plot (default: depth_gradients_BACKBONE.png in the current folder)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing plot")


def _degradation_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--depths", type=_depths, default=(20, 56, 110), help="e.g. 20,56,110")
    p.add_argument("--iterations", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--warmup-iterations", type=int, default=100)
    p.add_argument("--num-train", type=int, default=5000)
    p.add_argument("--num-val", type=int, default=1000)
    p.add_argument("--size", type=int, default=32, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--variants",
        type=lambda t: tuple(v.strip() for v in t.split(",") if v.strip()),
        default=("plain", "residual"),
        help="plain, residual or plain,residual",
    )
    p.add_argument(
        "--zero-init-residual",
        action="store_true",
        help="start the residual nets' blocks as identities (He et al. 2015 did not)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--output-dir", default="runs/depth/degradation")
    p.add_argument("--overwrite", action="store_true", help="replace existing results")


def _refuse_existing(paths: list[Path]) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise ValueError(
            f"{', '.join(existing)} exists; pass --overwrite to replace it or choose another path"
        )


def run_gradients(args: argparse.Namespace) -> int:
    from resvision.studies.residual import gradients as G

    output = Path(args.output or f"depth_gradients_{args.backbone}.png")
    if not args.overwrite:
        _refuse_existing([output])
    if args.batch_size < 2:
        raise ValueError(f"--batch-size {args.batch_size}: batch norm needs at least 2 images")
    size = args.size or G.default_size(args.backbone)
    images, labels = G.load_batch(
        args.images, size=size, batch_size=args.batch_size, seed=args.seed
    )
    results = G.compare(
        args.backbone, images, labels, plain=args.plain, eval_bn=args.eval_bn, seed=args.seed
    )
    source = args.images or "synthetic shapes"
    mode = "running statistics (eval)" if args.eval_bn else "batch statistics (train)"
    print(
        f"{args.backbone}: {len(images)} images of {size}x{size} ({source}), batch norm with {mode}"
    )
    print(G.format_report(results))
    title = f"{args.backbone}, {len(images)} x {size}px, batch norm: {mode}"
    print(f"wrote {G.plot(results, output, title)}")
    return 0


def run_degradation(args: argparse.Namespace) -> int:
    from resvision.studies.residual import degradation as D
    from resvision.tasks.engine.table import format_table

    cfg = D.DegradationConfig(
        depths=args.depths,
        iterations=args.iterations,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_iterations=args.warmup_iterations,
        num_train=args.num_train,
        num_val=args.num_val,
        size=args.size,
        seed=args.seed,
        threads=args.threads,
        variants=args.variants,
        zero_init_residual=args.zero_init_residual,
    )
    D.check_config(cfg)
    out = Path(args.output_dir)
    png, record = out / "degradation.png", out / "degradation.json"
    if not args.overwrite:
        _refuse_existing([png, record])
    every = max(1, cfg.iterations // 5)
    started = time.perf_counter()

    def progress(curve: D.Curve, it: int) -> None:
        if it % every == 0 or it == cfg.iterations:
            recent = curve.loss[-every:]
            print(
                f"  {curve.label:<11} iteration {it}/{cfg.iterations}: loss "
                f"{sum(recent) / len(recent):.4f} ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )

    nets = len(cfg.variants) * len(cfg.depths)
    init = ", residual branches zero-initialised" if cfg.zero_init_residual else ""
    print(
        f"training {nets} nets ({', '.join(map(str, sorted(cfg.depths)))} layers, "
        f"{' and '.join(cfg.variants)}{init}) for {cfg.iterations} iterations of "
        f"{cfg.batch_size} images of {cfg.size} px, lr {cfg.lr:g}",
        flush=True,
    )
    curves = D.run(cfg, progress=progress)
    print(format_table(D.SUMMARY_HEADERS, D.summary_rows(curves), floatfmt=".3f"))
    for line in D.verdict(curves):
        print(line)
    print(f"total {time.perf_counter() - started:.0f} s")
    out.mkdir(parents=True, exist_ok=True)
    print(f"wrote {D.plot(curves, png)} and {D.save_json(curves, cfg, record)}")
    return 0


GRADIENTS = Command(
    "gradient norm of every block's parameters and input, residual vs plain",
    _gradients_arguments,
    run_gradients,
    description="One forward/backward pass of a freshly initialised backbone (linear "
    "classifier on its last level, cross-entropy): the gradient norm of every block's "
    "parameters and of every block's input, first block to last; with --plain also for the "
    "same net without shortcuts. Prints a table and the first/last ratios, writes a "
    "log-scale plot.",
)
DEGRADATION = Command(
    "train plain and residual CIFAR nets of several depths, plot their training loss",
    _degradation_arguments,
    run_degradation,
    description="He et al. 2015, Figure 6, at CPU scale: plain and residual "
    "cifar_resnet{depth} nets trained on the built-in synthetic 32 px set with the same "
    "recipe and seed. Prints the final losses and errors, writes the loss curves "
    "(degradation.png) and every curve (degradation.json) into --output-dir.",
)
