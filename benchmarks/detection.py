"""``resvision benchmark detection``: ours vs torchvision, evaluation vs pycocotools, dataset size.

Everything is measured in one run on one machine:

1. train-step and inference images/s of resvision's Faster R-CNN and torchvision's
   ``fasterrcnn_resnet50_fpn`` holding the same weights, same batch, precision and image size;
2. COCO evaluation time of resvision's evaluator (faster-coco-eval) against pycocotools on a
   synthetic COCO-val-sized prediction set (5k images, ~36k boxes, 100 detections each);
3. the pickled size (what each DataLoader worker receives) and build time of the dataset for a
   synthetic train2017-sized json (118k images, 860k boxes), against torchvision's CocoDetection.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import io
import json
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from resvision.tasks.engine.runtime import autocast, resolve_device
from resvision.tasks.table import format_table

from .timing import best_of_rounds, device_name, items_per_second, sgd_train_step


def synthetic_coco(
    num_images: int, boxes_per_image: float, seed: int = 0, num_classes: int = 80
) -> dict:
    """A COCO-format dict shaped like COCO's: 640-wide images, polygon segmentations, crowds."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(boxes_per_image, num_images)
    images = [
        {
            "id": i + 1,
            "file_name": f"{i + 1:012d}.jpg",
            "height": int(h),
            "width": 640,
            "license": 1,
            "coco_url": "",
            "date_captured": "",
        }
        for i, h in enumerate(rng.integers(360, 641, num_images))
    ]
    anns, k = [], 0
    for img, n in zip(images, counts):
        for _ in range(n):
            w, h = rng.uniform(4, 300, 2)
            x, y = (
                rng.uniform(0, 640 - w),
                rng.uniform(0, img["height"] - h) if img["height"] > h else 0.0,
            )
            poly = [
                float(v)
                for v in np.stack([x + rng.uniform(0, w, 8), y + rng.uniform(0, h, 8)], 1)
                .reshape(-1)
                .round(2)
            ]
            k += 1
            anns.append(
                {
                    "id": k,
                    "image_id": img["id"],
                    "category_id": int(rng.integers(1, num_classes + 1)),
                    "bbox": [x, y, w, h],
                    "area": float(w * h * 0.6),
                    "iscrowd": int(rng.random() < 0.01),
                    "segmentation": [poly],
                }
            )
    cats = [
        {"id": c, "name": f"class_{c}", "supercategory": "thing"} for c in range(1, num_classes + 1)
    ]
    return {"images": images, "annotations": anns, "categories": cats}


def bench_dataset(num_images: int = 118_287, boxes_per_image: float = 7.3) -> list[list]:
    from torchvision.datasets import CocoDetection

    from resvision.datasets.detection import DetectionDataset, read_coco

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "instances.json"
        path.write_text(json.dumps(synthetic_coco(num_images, boxes_per_image)))
        gc.collect()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            theirs = CocoDetection(tmp, str(path))
        theirs_time = time.perf_counter() - t0
        theirs_size = len(pickle.dumps(theirs, protocol=pickle.HIGHEST_PROTOCOL))
        del theirs  # each is built with the other out of memory
        gc.collect()
        t0 = time.perf_counter()
        ours = DetectionDataset(read_coco(path), tmp)
        ours_time = time.perf_counter() - t0
        ours_size = len(pickle.dumps(ours, protocol=pickle.HIGHEST_PROTOCOL))
    return [
        ["torchvision CocoDetection", ours.ann.num_boxes, theirs_size / 2**20, theirs_time, 1.0],
        [
            "resvision DetectionDataset",
            ours.ann.num_boxes,
            ours_size / 2**20,
            ours_time,
            ours_size / theirs_size,
        ],
    ]


def bench_evaluation(
    num_images: int = 5000, gt_per_image: float = 7.3, dets_per_image: int = 100
) -> list[list]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from resvision.datasets.detection import read_coco
    from resvision.tasks.detection.evaluation import METRICS, COCOEvaluator

    rng = np.random.default_rng(1)
    gt = synthetic_coco(num_images, gt_per_image, seed=1)
    rows = []
    by_image = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    for img in gt["images"]:
        own = by_image.get(img["id"], [])
        for d in range(dets_per_image):
            if d < len(own) and rng.random() < 0.8:  # jittered true boxes and random ones
                x, y, w, h = (np.array(own[d]["bbox"]) * rng.uniform(0.9, 1.1, 4)).tolist()
                cat = own[d]["category_id"]
            else:
                w, h = rng.uniform(4, 300, 2)
                x, y, cat = rng.uniform(0, 600), rng.uniform(0, 400), int(rng.integers(1, 81))
            rows.append([img["id"], x, y, w, h, rng.random(), cat])
    rows = np.array(rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gt.json"
        path.write_text(json.dumps(gt))
        ann = read_coco(path)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(path))
            ev = COCOeval(coco, coco.loadRes(rows), "bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        t1 = time.perf_counter()
        ours = COCOEvaluator(ann, "faster_coco_eval").evaluate(rows)
        t2 = time.perf_counter()
    same = bool(np.allclose(ev.stats[:12], [ours[k] for k in METRICS], atol=1e-6))
    return [
        ["pycocotools", len(rows), t1 - t0, 1.0, float(ev.stats[0]), "-"],
        [
            "resvision (faster-coco-eval)",
            len(rows),
            t2 - t1,
            (t2 - t1) / (t1 - t0),
            ours["AP"],
            "yes" if same else "NO",
        ],
    ]


def host_syncs(fn) -> int:
    """How many times one call of ``fn`` makes the host wait for the GPU (CUDA sync debug mode)."""
    import warnings

    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def bench_models(
    *,
    batch: int,
    size: tuple[int, int],
    steps: int,
    amp: str,
    device: torch.device,
    rounds: int = 2,
) -> list[list]:
    import torchvision
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor

    from resvision.backbones import create_backbone
    from resvision.heads.detection import FasterRCNN
    from resvision.heads.detection.config import FasterRCNNConfig, TestSizeConfig

    torch.manual_seed(0)
    # torchvision's model as it is trained: what fasterrcnn_resnet50_fpn builds around ImageNet
    # weights (FrozenBatchNorm2d, stem and layer1 frozen), without the download
    trunk = torchvision.models.resnet50(norm_layer=torchvision.ops.misc.FrozenBatchNorm2d)
    tv = torchvision.models.detection.FasterRCNN(
        _resnet_fpn_extractor(trunk, 3), num_classes=91, min_size=size[0], max_size=size[1]
    )
    ours = FasterRCNN(
        create_backbone("resnet50", norm="frozen_bn", frozen_stages=2),
        FasterRCNNConfig(num_classes=90, test=TestSizeConfig(min_size=size[0], max_size=size[1])),
    )
    ours.load_state_dict(tv.state_dict())
    tv, ours = tv.to(device), ours.to(device)
    gen = torch.Generator().manual_seed(0)
    images = [(torch.rand(3, *size, generator=gen) * 255).round().to(device) for _ in range(batch)]
    targets = []
    for _ in range(batch):
        xy = torch.rand(6, 2, generator=gen) * torch.tensor([size[1] * 0.7, size[0] * 0.7])
        wh = torch.rand(6, 2, generator=gen) * 200 + 20
        targets.append(
            {
                "boxes": torch.cat([xy, xy + wh], 1).to(device),
                "labels": torch.randint(1, 91, (6,), generator=gen).to(device),
            }
        )
    unit = [img / 255 for img in images]

    def train_step(model, inputs, amp):
        return sgd_train_step(
            model, lambda: sum(model(inputs, targets).values()), amp=amp, device=device, lr=1e-4
        )

    def infer(model, inputs, amp):
        def run():
            model.eval()
            with torch.no_grad(), autocast(device, amp):
                model(inputs)

        return run

    runs = [
        ("torchvision fasterrcnn_resnet50_fpn", tv, unit, amp),
        ("resvision FasterRCNN (same weights)", ours, images, amp),
    ]
    if device.type == "cuda":  # the runtime option --set runtime.channels_last=true, and bf16
        runs += [
            (f"resvision, {amp} + channels_last", ours, images, f"{amp}+cl"),
            ("resvision, bf16 + channels_last", ours, images, "bf16+cl"),
            (f"torchvision, {amp} + channels_last", tv, unit, f"{amp}+cl"),
        ]
    setups = []
    for name, model, inputs, precision in runs:
        if precision.endswith("+cl"):  # a copy: the other rows keep the default layout
            model = copy.deepcopy(model).to(memory_format=torch.channels_last)
            precision = precision[:-3]
        setups.append((name, model, inputs, precision))

    # set-ups alternate over the rounds (forwards, then backwards) and each keeps its best, so
    # that clock or thermal drift during the run does not favour whichever ran first
    def measure(setup):
        _, model, inputs, precision = setup
        train = items_per_second(
            train_step(model, inputs, precision), items=batch, steps=steps, device=device
        )
        rate = items_per_second(
            infer(model, inputs, precision), items=batch, steps=steps, device=device
        )
        return train, rate

    best = best_of_rounds(setups, rounds, measure)
    rows = []
    for (name, model, inputs, precision), figures in zip(setups, best):
        syncs = host_syncs(train_step(model, inputs, precision)) if device.type == "cuda" else "-"
        size_text = f"{batch}x{size[0]}x{size[1]}"
        rows.append([name, device.type, precision, size_text, *figures, syncs])
    for r in rows:
        r.append(r[4] / rows[0][4])
    return rows


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="resvision benchmark detection",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=__doc__,
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, default=None, help="default: 8 on GPU, 2 on CPU")
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=None,
        metavar=("MIN", "MAX"),
        help="test/train size (default 800 1216 on GPU, 320 480 on CPU)",
    )
    p.add_argument(
        "--steps", type=int, default=None, help="timed steps (default 20 on GPU, 2 on CPU)"
    )
    p.add_argument(
        "--amp",
        choices=("off", "bf16", "fp16"),
        default=None,
        help="default: fp16 on GPU, off on CPU",
    )
    p.add_argument(
        "--rounds", type=int, default=2, help="rounds over the models (best of each kept)"
    )
    p.add_argument("--eval-images", type=int, default=5000)
    p.add_argument("--dataset-images", type=int, default=118_287)
    p.add_argument("--skip", nargs="*", default=[], choices=("models", "evaluation", "dataset"))
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if "models" not in args.skip:
        size = tuple(args.size or ((800, 1216) if cuda else (320, 480)))
        rows = bench_models(
            batch=args.batch or (8 if cuda else 2),
            size=size,
            steps=args.steps or (20 if cuda else 2),
            amp=args.amp or ("fp16" if cuda else "off"),
            device=device,
            rounds=args.rounds,
        )
        print(f"Faster R-CNN R50-FPN on {device_name(device)}\n")
        print(
            format_table(
                (
                    "model",
                    "device",
                    "precision",
                    "batch",
                    "train img/s",
                    "infer img/s",
                    "host syncs/train step",
                    "train vs torchvision",
                ),
                rows,
                floatfmt=".2f",
            )
        )
    if "evaluation" not in args.skip:
        print(f"\nCOCO box evaluation, {args.eval_images} images x 100 detections\n")
        rows = bench_evaluation(args.eval_images)
        print(
            format_table(
                ("evaluator", "detections", "seconds", "time vs pycocotools", "AP", "same stats"),
                rows,
                floatfmt=".3f",
            )
        )
    if "dataset" not in args.skip:
        print(f"\nDataset for a train2017-sized json ({args.dataset_images} images)\n")
        rows = bench_dataset(args.dataset_images)
        print(
            format_table(
                ("dataset", "boxes", "pickled MiB", "build s", "size vs torchvision"),
                rows,
                floatfmt=".3f",
            )
        )
    return 0
