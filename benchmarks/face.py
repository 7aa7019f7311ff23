"""``resvision benchmark face``: training samples/s against the arcface_torch way, evaluation time
(the 10-fold verification protocol, and IJB-C at its real size: benchmarks/face_ijb.py).

The peer is the same iResNet trained as arcface_torch does it: fp16 autocast over the trunk only,
the head, classifier and margin loss in fp32, a gradient scaler, NCHW memory layout and a full
softmax over every identity. resvision's default GPU recipe: bf16 autocast with channels_last
(the margin loss is fp32 inside either way), Partial FC.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
import torch

from resvision.tasks.engine.runtime import resolve_device
from resvision.tasks.engine.table import format_table

from .timing import device_name, items_per_second, sgd_train_step


def bench_training(
    *,
    backbone: str,
    batch: int,
    classes: int,
    size: int,
    steps: int,
    device: torch.device,
    cuda: bool,
) -> list[list]:
    from resvision.heads.embedding import EmbeddingModelConfig, build_embedding_model
    from resvision.heads.margin import ARCFACE, CombinedMarginLoss, PartialFC

    torch.manual_seed(0)
    images = (torch.rand(batch, 3, size, size, device=device) * 255).round()
    labels = torch.randint(0, classes, (batch,), device=device)
    rows = []

    def run(name: str, amp: str, channels_last: bool, trunk_only: bool) -> None:
        model = build_embedding_model(EmbeddingModelConfig(backbone, input_size=size)).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        classifier = PartialFC(CombinedMarginLoss(64.0, **ARCFACE), 512, classes).to(device)
        x = images.contiguous(memory_format=torch.channels_last) if channels_last else images

        def loss() -> torch.Tensor:
            if trunk_only:  # arcface_torch: autocast over the trunk, head and loss in fp32
                feats = model.backbone(model.backbone.normalization.normalize(x))
                with torch.autocast(device.type, enabled=False):
                    emb = model.head(feats[model.backbone.feature_specs[-1].name].float())
            else:
                emb = model(x)
            return classifier(emb, labels)

        params = list(model.parameters()) + list(classifier.parameters())
        step = sgd_train_step(
            model, loss, amp=amp, device=device, params=params, lr=0.1, weight_decay=5e-4
        )
        rate = items_per_second(step, items=batch, steps=steps, device=device)
        rows.append([name, f"{batch}x{size}", classes, amp, rate])

    run("arcface_torch way (fp16 trunk, fp32 head, NCHW)", "fp16" if cuda else "off", False, True)
    run(
        "resvision default" + (" (bf16 + channels_last)" if cuda else " (fp32)"),
        "bf16" if cuda else "off",
        cuda,
        False,
    )
    for r in rows:
        r.append(r[4] / rows[0][4])
    return rows


def _reference_evaluate():
    """InsightFace's per-threshold loop, as the tests keep it
    (tests/tasks/face/insightface_reference.py)."""
    tests = Path(__file__).resolve().parents[1] / "tests"
    path = tests / "tasks" / "face" / "insightface_reference.py"
    spec = importlib.util.spec_from_file_location("insightface_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference_evaluate


def bench_verification(pairs: int = 6000, dim: int = 512, repeats: int = 1) -> list[list]:
    from resvision.tasks.face.evaluation import evaluate_embeddings

    reference_evaluate = _reference_evaluate()
    rng = np.random.default_rng(0)
    ids = rng.normal(size=(pairs, dim))
    issame = np.arange(pairs) % 2 == 0
    a = ids + 4.0 * rng.normal(size=(pairs, dim))
    b = np.where(issame[:, None], ids, rng.normal(size=(pairs, dim))) + 4.0 * rng.normal(
        size=(pairs, dim)
    )
    emb = np.empty((2 * pairs, dim))
    emb[0::2], emb[1::2] = a, b
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    t0 = time.perf_counter()
    for _ in range(repeats):
        ref = reference_evaluate(emb, issame)
    t1 = time.perf_counter()
    for _ in range(repeats):
        ours = evaluate_embeddings(emb, issame)
    t2 = time.perf_counter()
    same = all(ours[k] == ref[k] for k in ref)
    loop, vec = (t1 - t0) / repeats, (t2 - t1) / repeats
    return [
        ["per-threshold loop (InsightFace's structure)", pairs, loop, 1.0, ref["acc"], "-"],
        ["resvision vectorized", pairs, vec, loop / vec, ours["acc"], "yes" if same else "NO"],
    ]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="resvision benchmark face",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=__doc__,
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--backbone", default="iresnet50")
    p.add_argument("--batch", type=int, default=None, help="default 512 on GPU, 8 on CPU")
    p.add_argument(
        "--classes", type=int, default=None, help="identities (default 93431 on GPU, 2000 on CPU)"
    )
    p.add_argument("--size", type=int, default=112)
    p.add_argument(
        "--steps", type=int, default=None, help="timed steps (default 20 on GPU, 2 on CPU)"
    )
    p.add_argument("--pairs", type=int, default=6000)
    p.add_argument(
        "--ijb-scale", type=float, default=1.0, help="IJB-C protocol size (1 = the real one)"
    )
    p.add_argument(
        "--ijb-no-reference",
        action="store_true",
        help="time only resvision's IJB protocol (the loops take minutes at full size)",
    )
    p.add_argument(
        "--ijb-no-files", action="store_true", help="do not time the reading of the meta files"
    )
    p.add_argument("--skip", nargs="*", default=[], choices=("training", "verification", "ijb"))
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if "training" not in args.skip:
        rows = bench_training(
            backbone=args.backbone,
            batch=args.batch or (512 if cuda else 8),
            classes=args.classes or (93431 if cuda else 2000),
            size=args.size,
            steps=args.steps or (20 if cuda else 2),
            device=device,
            cuda=cuda,
        )
        print(f"{args.backbone} + ArcFace training on {device_name(device)}\n")
        print(
            format_table(
                ("setup", "batch", "classes", "precision", "samples/s", "vs arcface_torch way"),
                rows,
                floatfmt=".2f",
            )
        )
    if "verification" not in args.skip:
        print(f"\nVerification protocol on {args.pairs} pairs\n")
        print(
            format_table(
                ("implementation", "pairs", "seconds", "speed-up", "accuracy", "identical"),
                bench_verification(args.pairs),
                floatfmt=".4f",
            )
        )
    if "ijb" not in args.skip:
        from .face_ijb import bench_ijb

        bench_ijb(
            scale=args.ijb_scale, reference=not args.ijb_no_reference, files=not args.ijb_no_files
        )
    return 0
