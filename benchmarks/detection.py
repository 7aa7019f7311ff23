"""``resvision benchmark detection``: ours vs torchvision, evaluation vs pycocotools, dataset size.

Everything is measured in one run on one machine:

1. train-step and inference images/s of resvision's Faster R-CNN and Mask R-CNN against
   torchvision's ``fasterrcnn_resnet50_fpn`` and ``maskrcnn_resnet50_fpn`` holding the same
   weights, same batch, precision and image size;
2. COCO evaluation time, box (bbox) and mask (segm), of resvision's evaluator (vernier) and of
   faster-coco-eval against pycocotools, in CPU seconds (and wall seconds), on a synthetic
   COCO-val-sized set (5k images, ~36k objects with polygons and crowd RLE, 100 detections an
   image, each with its mask as RLE), with the stats compared;
3. the pickled size (what each DataLoader worker receives) and build time of the dataset for a
   synthetic train2017-sized json (118k images, 860k boxes), boxes only and with the masks,
   against torchvision's CocoDetection.
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
from functools import partial
from pathlib import Path

import numpy as np
import torch

from resvision.tasks.engine.runtime import autocast, resolve_device
from resvision.tasks.engine.table import format_table

from .timing import best_of_rounds, device_name, items_per_second, sgd_train_step


def box_rle(x: float, y: float, w: float, h: float, height: int, width: int) -> dict:
    """The pixels of a box as RLE with uncompressed counts (column-major runs, first of 0s)."""
    x0, x1 = int(max(x, 0)), int(min(np.ceil(x + w), width))
    y0, y1 = int(max(y, 0)), int(min(np.ceil(y + h), height))
    if x1 <= x0 or y1 <= y0:
        return {"size": [height, width], "counts": [height * width]}
    counts = [x0 * height + y0]
    for _ in range(x0, x1 - 1):
        counts += [y1 - y0, height - (y1 - y0)]
    counts += [y1 - y0, (width - x1 + 1) * height - y1]
    return {"size": [height, width], "counts": counts}


def synthetic_coco(
    num_images: int, boxes_per_image: float, seed: int = 0, num_classes: int = 80
) -> dict:
    """A COCO-format dict shaped like COCO's: 640-wide images, polygon segmentations, crowd
    regions as uncompressed RLE."""
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
            crowd = int(rng.random() < 0.01)
            anns.append(
                {
                    "id": k,
                    "image_id": img["id"],
                    "category_id": int(rng.integers(1, num_classes + 1)),
                    "bbox": [x, y, w, h],
                    "area": float(w * h * 0.6),
                    "iscrowd": crowd,
                    # crowd regions as COCO writes them: RLE with uncompressed counts
                    "segmentation": box_rle(x, y, w, h, img["height"], 640) if crowd else [poly],
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
        rows = [["torchvision CocoDetection", 0, theirs_size / 2**20, theirs_time, 1.0]]
        for name, masks in (("resvision DetectionDataset", False), ("  with masks", True)):
            gc.collect()
            t0 = time.perf_counter()
            ours = DetectionDataset(read_coco(path, masks=masks), tmp, masks=masks)
            took = time.perf_counter() - t0
            size = len(pickle.dumps(ours, protocol=pickle.HIGHEST_PROTOCOL))
            rows.append([name, ours.ann.num_boxes, size / 2**20, took, size / theirs_size])
            del ours
    rows[0][1] = rows[1][1]
    return rows


def evaluation_set(
    num_images: int, gt_per_image: float = 7.3, dets_per_image: int = 100, seed: int = 1
):
    """A synthetic ground truth and detections as a model gives them: rows and, per detection,
    its mask as RLE at the image size (jittered true polygons and random ones)."""
    from pycocotools import mask as mask_utils

    from resvision.tasks.engine.coco import COCOResults

    rng = np.random.default_rng(seed)
    gt = synthetic_coco(num_images, gt_per_image, seed=seed)
    by_image: dict[int, list] = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    rows, rles, sizes = [], [], []
    for img in gt["images"]:
        own = by_image.get(img["id"], [])
        h, w = img["height"], img["width"]
        polygons = []
        for d in range(dets_per_image):
            if d < len(own) and rng.random() < 0.8:  # jittered true objects and random ones
                x, y, bw, bh = (np.array(own[d]["bbox"]) * rng.uniform(0.9, 1.1, 4)).tolist()
                cat = own[d]["category_id"]
                seg = own[d]["segmentation"]
                if isinstance(seg, dict):  # a crowd region: its box
                    seg = [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
                poly = np.array(seg[0]).reshape(-1, 2) + rng.normal(0, 3, (len(seg[0]) // 2, 2))
            else:
                bw, bh = rng.uniform(4, 300, 2)
                x, y, cat = rng.uniform(0, 600), rng.uniform(0, 400), int(rng.integers(1, 81))
                poly = np.stack([x + rng.uniform(0, bw, 8), y + rng.uniform(0, bh, 8)], 1)
            rows.append([img["id"], x, y, bw, bh, rng.random(), cat])
            polygons.append(poly.reshape(-1).tolist())
        rles += [r["counts"] for r in mask_utils.frPyObjects(polygons, h, w)]
        sizes += [(h, w)] * len(polygons)
    return gt, COCOResults(np.array(rows), rles, np.array(sizes))


def _cpu_and_wall(fn):
    gc.collect()
    w0, c0 = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):
        out = fn()
    return out, time.process_time() - c0, time.perf_counter() - w0


def bench_evaluation(num_images: int = 5000, dets_per_image: int = 100) -> list[list]:
    """Per iou type: pycocotools (the json read, loadRes, evaluate, accumulate, summarize),
    faster-coco-eval and resvision's evaluator (vernier; from the json path) on the same
    inputs; CPU seconds (all threads) decide the ratio, the stats must be identical."""
    from faster_coco_eval import COCO as FCOCO
    from faster_coco_eval import COCOeval_faster
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from resvision.datasets.detection import coco_ground_truth
    from resvision.tasks.engine.coco import METRICS, COCOEvaluation

    gt, results = evaluation_set(num_images, dets_per_image=dets_per_image)
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gt.json"
        path.write_text(json.dumps(gt))
        del gt
        for iou_type in ("bbox", "segm"):
            inputs = results.rows if iou_type == "bbox" else results.records("segm")

            def reference(coco_class, eval_class, inputs, iou_type=iou_type):
                coco = coco_class(str(path))
                ev = eval_class(coco, coco.loadRes(inputs), iou_type)
                ev.evaluate(), ev.accumulate(), ev.summarize()
                return np.asarray(ev.stats)

            def ours(iou_type=iou_type):
                truth = coco_ground_truth(path, segmentations=iou_type == "segm")
                scores = COCOEvaluation(truth, "vernier").evaluate(results, iou_type)
                return np.array([scores.stats[m] for m in METRICS])

            fresh = copy.deepcopy(inputs)  # loadRes writes into the records: a copy each
            expected, cpu0, wall0 = _cpu_and_wall(partial(reference, COCO, COCOeval, fresh))
            table.append(
                [iou_type, "pycocotools", len(results), cpu0, wall0, 1.0, expected[0], "-"]
            )
            fresh = copy.deepcopy(inputs)
            for name, run in (
                ("faster-coco-eval", partial(reference, FCOCO, COCOeval_faster, fresh)),
                ("resvision (vernier)", ours),
            ):
                stats, cpu, wall = _cpu_and_wall(run)
                same = (
                    "yes"
                    if np.array_equal(stats[:12], expected[:12])
                    else (
                        "1e-9"
                        if np.allclose(stats[:12], expected[:12], rtol=0, atol=1e-9)
                        else "NO"
                    )
                )
                table.append([iou_type, name, len(results), cpu, wall, cpu / cpu0, stats[0], same])
    return table


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
    masks: bool = False,
    detections: int = 100,
) -> list[list]:
    import torchvision
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor

    from resvision.backbones import create_backbone
    from resvision.heads.detection import FasterRCNN
    from resvision.heads.detection.config import (
        FasterRCNNConfig,
        MaskHeadConfig,
        RoIHeadsConfig,
        TestSizeConfig,
    )

    torch.manual_seed(0)
    # torchvision's model as it is trained: what fasterrcnn_resnet50_fpn (maskrcnn_...) builds
    # around ImageNet weights (FrozenBatchNorm2d, stem and layer1 frozen), without the download
    trunk = torchvision.models.resnet50(norm_layer=torchvision.ops.misc.FrozenBatchNorm2d)
    build = (
        torchvision.models.detection.MaskRCNN if masks else torchvision.models.detection.FasterRCNN
    )
    tv = build(
        _resnet_fpn_extractor(trunk, 3),
        num_classes=91,
        min_size=size[0],
        max_size=size[1],
        box_detections_per_img=detections,
    )
    ours = FasterRCNN(
        create_backbone("resnet50", norm="frozen_bn", frozen_stages=2),
        FasterRCNNConfig(
            num_classes=90,
            roi_heads=RoIHeadsConfig(detections_per_img=detections),
            mask=MaskHeadConfig(enabled=masks),
            test=TestSizeConfig(min_size=size[0], max_size=size[1]),
        ),
    )
    ours.load_state_dict(tv.state_dict())
    tv, ours = tv.to(device), ours.to(device)
    gen = torch.Generator().manual_seed(0)
    images = [(torch.rand(3, *size, generator=gen) * 255).round().to(device) for _ in range(batch)]
    targets = []
    for _ in range(batch):
        xy = torch.rand(6, 2, generator=gen) * torch.tensor([size[1] * 0.7, size[0] * 0.7])
        wh = torch.rand(6, 2, generator=gen) * 200 + 20
        boxes = torch.cat([xy, xy + wh], 1)
        target = {"boxes": boxes.to(device), "labels": torch.randint(1, 91, (6,), generator=gen)}
        target["labels"] = target["labels"].to(device)
        if masks:  # ellipses inscribed in the boxes
            yy, xx = torch.meshgrid(torch.arange(size[0]), torch.arange(size[1]), indexing="ij")
            c, r = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) / 2
            inside = ((xx - c[:, 0, None, None]) / r[:, 0, None, None]) ** 2 + (
                (yy - c[:, 1, None, None]) / r[:, 1, None, None]
            ) ** 2
            target["masks"] = (inside <= 1).to(torch.uint8).to(device)
        targets.append(target)
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

    family = "maskrcnn" if masks else "fasterrcnn"
    runs = [
        (f"torchvision {family}_resnet50_fpn", tv, unit, amp),
        (f"resvision {'Mask' if masks else 'Faster'} R-CNN (same weights)", ours, images, amp),
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
        r += [r[4] / rows[0][4], r[5] / rows[0][5]]
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
    p.add_argument(
        "--detections",
        type=int,
        default=100,
        help="detections an image at inference (both models; torchvision's default 100)",
    )
    p.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=("models", "mask-models", "evaluation", "dataset"),
    )
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    for part, masks, title in (
        ("models", False, "Faster R-CNN"),
        ("mask-models", True, "Mask R-CNN"),
    ):
        if part in args.skip:
            continue
        size = tuple(args.size or ((800, 1216) if cuda else (320, 480)))
        rows = bench_models(
            batch=args.batch or (8 if cuda else 2),
            size=size,
            steps=args.steps or (20 if cuda else 2),
            amp=args.amp or ("fp16" if cuda else "off"),
            device=device,
            rounds=args.rounds,
            masks=masks,
            detections=args.detections,
        )
        print(f"\n{title} R50-FPN on {device_name(device)}\n")
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
                    "infer vs torchvision",
                ),
                rows,
                floatfmt=".2f",
            )
        )
    if "evaluation" not in args.skip:
        print(f"\nCOCO evaluation, {args.eval_images} images x 100 detections (CPU seconds)\n")
        rows = bench_evaluation(args.eval_images)
        print(
            format_table(
                (
                    "iou",
                    "evaluator",
                    "detections",
                    "CPU s",
                    "wall s",
                    "CPU vs pycocotools",
                    "AP",
                    "same stats",
                ),
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
