"""``resvision benchmark predict``: prediction over a collection of image files, before and after
the bulk path, on the same images and the same model.

- ``model only``: the model's own rate on tensors already in memory (on the device);
- ``loop``: the loop ``predict`` / ``face embed`` ran before the bulk path (one thread reads and
  prepares each image, outputs gathered in memory and written at the end);
- ``bulk, N workers``: the engine's bulk path (``N`` decoding processes, 0 = in the main one;
  parts on disk, outputs assembled at the end).

Each set-up runs in a process of its own, so its peak resident memory (main process, and the
largest decoding worker) is its alone. The images are JPEG files written once into a temporary
folder (or ``--folder``): noise pictures, so decoding costs what a photo of that size costs.

Defaults: on a GPU, the issue's targets (iResNet-50 embeddings of 112 px crops, 8 workers;
ResNet-50 Faster R-CNN at 800 px); on a CPU, the same embedding model, and a memory table at
1,000 and 20,000 inputs with a small model (what grows with the input count is the loop, not the
model).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from resvision.tasks.engine.table import format_table


# -- the images ----------------------------------------------------------------------------------
def write_images(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> Path:
    """``count`` JPEGs of ``size`` (h, w) under ``folder`` (100 per sub-folder); 64 distinct
    pictures repeated, so that writing 20,000 of them takes seconds."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(min(count, 64)):
        h, w = size
        if rng.random() < 0.3:  # some portrait pictures: the bulk path groups by aspect ratio
            h, w = w, h
        noise = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        picture = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
        pool.append(cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    for i in range(count):
        path = folder / f"{i // 100:04d}" / f"{i:06d}.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(pool[i % len(pool)])
    return folder


# -- the models ----------------------------------------------------------------------------------
def build_embedder(backbone: str, size: int, device):
    from resvision.heads.embedding import EmbeddingModelConfig, build_embedding_model
    from resvision.tasks.face.inference import Embedder

    model = build_embedding_model(EmbeddingModelConfig(backbone, input_size=size))
    return Embedder(model, size, device=device, amp="bf16" if device.type == "cuda" else "off")


def build_detector(min_size: int, device):
    from resvision.backbones import create_backbone
    from resvision.heads.detection import FasterRCNN
    from resvision.heads.detection.config import FasterRCNNConfig, TestSizeConfig
    from resvision.tasks.detection.inference import Detector

    test = TestSizeConfig(min_size=min_size, max_size=min_size * 1333 // 800)
    model = FasterRCNN(
        create_backbone("resnet50", norm="frozen_bn"), FasterRCNNConfig(num_classes=90, test=test)
    )
    names = [f"class_{i}" for i in range(1, 91)]
    return Detector(model, names, device=device, amp="bf16" if device.type == "cuda" else "off")


# -- one set-up, in its own process --------------------------------------------------------------
def peak_rss_mb() -> tuple[float, float]:
    """Peak resident memory (MB) of this process and of its largest finished child."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def run_one(args: argparse.Namespace) -> dict:
    import torch

    from resvision.datasets.inputs import expand_inputs
    from resvision.tasks.engine.bulk import run_bulk
    from resvision.tasks.engine.runtime import resolve_device

    device = resolve_device(args.device)
    torch.manual_seed(0)
    images = expand_inputs([args.folder])
    out = Path(args.out)
    if args.task == "face":
        predictor = build_embedder(args.backbone, args.size, device)
    else:
        predictor = build_detector(args.size, device)
    t0 = time.perf_counter()
    if args.mode == "model":
        count, t0 = model_only(args, predictor, images, device)
    elif args.mode == "loop":
        count = loop(args, predictor, images, out)
    else:
        job = bulk_job(args, predictor, images, out)
        result = run_bulk(
            job, images, out / "parts", batch_size=args.batch, workers=args.workers, device=device
        )
        count = result.images
    seconds = time.perf_counter() - t0
    own, worker = peak_rss_mb()
    return {"images": count, "seconds": seconds, "rss_mb": own, "worker_rss_mb": worker}


def model_only(args, predictor, images, device) -> tuple[int, float]:
    """The model on one batch already on the device, run as many times as the collection has
    batches: ``(images, start time)`` of the timed part."""
    import torch

    from resvision.datasets.images import read_rgb
    from resvision.tasks.face.inference import face_crop

    from .timing import synchronize

    first = [read_rgb(i.path) for i in images[: args.batch]]
    if args.task == "face":
        crops = torch.from_numpy(np.stack([face_crop(x, None, args.size) for x in first]))
        crops = crops.to(device)
        run = lambda: predictor.embed_crops(crops)  # noqa: E731
    else:
        tensors = [torch.from_numpy(x).permute(2, 0, 1).to(device) for x in first]
        run = lambda: predictor.predict(tensors, batch_size=len(tensors))  # noqa: E731
    run()  # warm-up
    synchronize(device)
    steps = max(1, len(images) // args.batch)
    t0 = time.perf_counter()
    for _ in range(steps):
        run()
    synchronize(device)
    return steps * len(first), t0


def loop(args, predictor, images, out: Path) -> int:
    """The loop before the bulk path: read one image after the other in this process, run
    batches, write per-image pictures, keep every aggregated output in memory and write it at
    the end."""
    import cv2

    from resvision.datasets.images import ImageReadError, read_rgb
    from resvision.tasks.detection.visualize import class_colours, draw_detections

    kept, names, batch = [], [], []
    (out / "drawn").mkdir(parents=True, exist_ok=True)
    colours = None if args.task == "face" else class_colours(len(predictor.class_names))

    def flush() -> None:
        if args.task == "face":
            kept.append(predictor.embed([rgb for _, rgb in batch], batch_size=args.batch))
        else:
            for (item, rgb), r in zip(batch, predictor.predict([b for _, b in batch])):
                kept.extend(
                    {"file_name": item.name, "bbox": box.tolist(), "score": float(score)}
                    for box, score in zip(r["boxes"], r["scores"])
                )
                shown = r["scores"] >= 0.3
                drawn = draw_detections(
                    rgb,
                    r["boxes"][shown],
                    r["scores"][shown],
                    r["class_names"][shown],
                    colours[r["labels"][shown]],
                )
                target = out / "drawn" / Path(item.name).name
                cv2.imwrite(str(target), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        names.extend(item.name for item, _ in batch)
        batch.clear()

    for item in images:
        try:
            batch.append((item, read_rgb(item.path)))
        except ImageReadError:
            continue
        if len(batch) == args.batch:
            flush()
    if batch:
        flush()
    if args.task == "face":
        np.savez(out / "embeddings.npz", embeddings=np.concatenate(kept), names=np.array(names))
    else:
        (out / "results.json").write_text(json.dumps(kept))
    return len(names)


def bulk_job(args, predictor, images, out: Path):
    if args.task == "face":
        from resvision.tasks.face.bulk import EmbeddingsBulk

        return EmbeddingsBulk(predictor, out / "embeddings.npz", flip=True, depends_on={})
    from resvision.tasks.detection.bulk import DetectionBulk

    drawn = [out / "drawn" / Path(i.name).name for i in images]
    return DetectionBulk(predictor, out, drawn, score_threshold=0.3, tta=False, depends_on={})


# -- the parent: every set-up in a child process --------------------------------------------------
def child(args: argparse.Namespace, mode: str, workers: int, count: int, folder: Path) -> dict:
    out = Path(tempfile.mkdtemp(prefix="resvision-bench-out-"))
    cmd = [
        sys.executable,
        "-m",
        "resvision.tools",
        "benchmark",
        "predict",
        "--one",
        mode,
        "--task",
        args.task,
        "--device",
        args.device,
        "--backbone",
        args.backbone,
        "--size",
        str(args.size),
        "--batch",
        str(args.batch),
        "--workers",
        str(workers),
        "--folder",
        str(folder),
        "--out",
        str(out),
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"{mode} failed:\n{done.stderr[-3000:]}")
        figures = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(out, ignore_errors=True)
    figures["rate"] = figures["images"] / max(figures["seconds"], 1e-9)
    return figures


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="resvision benchmark predict",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=__doc__,
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--task", choices=("face", "detection"), default="face")
    p.add_argument("--backbone", default="iresnet50", help="the embedding model (face)")
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="crop side (face: 112) or test size (detection: 800 on a GPU, 320 on a CPU)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="the JPEGs' size (default: 112 112 for faces, 480 640 for detection)",
    )
    p.add_argument("--batch", type=int, default=None, help="default: 64 faces / 4 photos (CPU: 2)")
    p.add_argument(
        "--images", type=int, default=None, help="default: 20000 on a GPU, 1000 on a CPU"
    )
    p.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=None,
        help="bulk set-ups (default: 8 on a GPU, 0 1 2 on a CPU)",
    )
    p.add_argument(
        "--memory",
        type=int,
        nargs="*",
        default=None,
        help="input counts of the memory table (default on a CPU: 1000 20000; none "
        "on a GPU); it runs the loop and the bulk path with --memory-backbone",
    )
    p.add_argument("--memory-backbone", default="iresnet18")
    p.add_argument("--memory-size", type=int, default=32)
    p.add_argument("--folder", default=None, help="where to write (and keep) the images")
    p.add_argument("--json", default=None, help="also write every figure here")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a child: one set-up
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        args.mode = args.one
        args.workers = args.workers[0] if args.workers else 0
        print(json.dumps(run_one(args)))
        return 0

    from resvision.tasks.engine.runtime import resolve_device

    from .timing import device_name

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    face = args.task == "face"
    args.device = str(device)
    args.size = args.size or (112 if face else (800 if cuda else 320))
    args.batch = args.batch or (64 if face else (4 if cuda else 2))
    count = args.images or (20000 if cuda else 1000)
    workers = args.workers or ([8] if cuda else [0, 1, 2])
    memory = args.memory if args.memory is not None else ([] if cuda else [1000, 20000])
    image_size = tuple(args.image_size or ((112, 112) if face else (480, 640)))
    scratch = Path(args.folder or tempfile.mkdtemp(prefix="resvision-bench-images-"))
    figures: dict = {"device": device_name(device), "task": args.task}
    try:
        folder = write_images(scratch / f"{count}", count, image_size)
        what = (
            f"{args.backbone} embeddings of {args.size} px crops (flip)"
            if face
            else f"Faster R-CNN ResNet-50 FPN at {args.size} px"
        )
        print(
            f"{what}, {count} JPEGs of {image_size[1]}x{image_size[0]}, batch {args.batch}, "
            f"on {device_name(device)} ({os.cpu_count()} cores)\n"
        )
        rows, model_rate = [], None
        setups = [("model only", "model", 0), ("loop (before)", "loop", 0)]
        setups += [(f"bulk, {w} workers", "bulk", w) for w in workers]
        for name, mode, w in setups:
            r = child(args, mode, w, count, folder)
            model_rate = r["rate"] if mode == "model" else model_rate
            share = f"{100 * r['rate'] / model_rate:.0f}%" if mode != "model" else "-"
            rows.append([name, r["rate"], share, r["rss_mb"], r["worker_rss_mb"] if w else 0.0])
            figures[name] = r
        print(
            format_table(
                ("set-up", "images/s", "of model only", "peak RSS MB", "worker peak RSS MB"),
                rows,
                floatfmt=".1f",
            )
        )
        if memory and face:
            args.backbone, args.size = args.memory_backbone, args.memory_size
            print(
                f"\npeak memory against the number of inputs ({args.backbone}, "
                f"{args.size} px crops)\n"
            )
            rows = []
            for n in memory:
                folder = write_images(scratch / f"{n}", n, image_size)
                for name, mode, w in (("loop (before)", "loop", 0), ("bulk, 2 workers", "bulk", 2)):
                    r = child(args, mode, w, n, folder)
                    rows.append([name, n, r["rate"], r["rss_mb"], r["worker_rss_mb"] if w else 0.0])
                    figures[f"memory {name} {n}"] = r
            print(
                format_table(
                    ("set-up", "inputs", "images/s", "peak RSS MB", "worker peak RSS MB"),
                    rows,
                    floatfmt=".1f",
                )
            )
    finally:
        if not args.folder:
            shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        from resvision.tasks.engine.files import atomic_write_text

        atomic_write_text(Path(args.json), json.dumps(figures, indent=1))
    return 0
