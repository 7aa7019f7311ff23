"""``resvision demo``: what ``make demo`` runs, on data that ships with resvision or its
dependencies (no download): the backbone registry on a real photo, then each task trained and
evaluated on its built-in synthetic data on the CPU."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .backbones_cmd import HEADERS, backbone_rows
from .tasks import Command

if TYPE_CHECKING:
    import numpy as np

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
    import numpy as np
    import torch

    from resvision.backbones import create_backbone

    rows = []
    for name in names:
        torch.manual_seed(0)
        with torch.device("meta"):
            levels = [s.name for s in create_backbone(name).family_specs]
        model = create_backbone(name, out_levels=levels).eval()
        img = image
        if name.startswith("iresnet"):  # face models take 112x112 crops: take the face
            face = torch.from_numpy(image[30:230, 130:330]).permute(2, 0, 1)[None].float()
            img = torch.nn.functional.interpolate(face, size=(112, 112))[0].permute(1, 2, 0).numpy()
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
        with torch.no_grad():
            feats = model(model.normalization.normalize(x))
        for spec in model.feature_specs:
            rows.append(
                [name, tuple(x.shape[-2:]), spec.name, spec.stride, tuple(feats[spec.name].shape)]
            )
    return rows


def demo_backbones(out: Path) -> None:
    from resvision.tasks.engine.table import format_table

    print("== Registered backbones ==\n")
    print(format_table(HEADERS, backbone_rows(), floatfmt=".2f"))
    print("\n== Feature maps on scikit-image's astronaut photo (random weights) ==\n")
    rows = run_backbones(astronaut())
    print(format_table(("backbone", "input HxW", "level", "stride", "shape"), rows))


def demo_segmentation(out: Path) -> None:
    import numpy as np

    from resvision.tasks.engine.config import apply_overrides
    from resvision.tasks.engine.loop import train
    from resvision.tasks.segmentation.config import PRESETS
    from resvision.tasks.segmentation.inference import Segmenter
    from resvision.tasks.segmentation.task import SegmentationTask

    print("\n== Segmentation: U-Net (resnet18) trained from scratch on synthetic shapes, CPU ==\n")
    run = out / "segmentation"
    cfg = apply_overrides(PRESETS["unet_r18_synthetic"](), [f"runtime.output_dir={run}"])
    t0 = time.perf_counter()
    result = train(SegmentationTask(), cfg)
    print(
        f"\ntrained {result.iteration} iterations in {time.perf_counter() - t0:.0f} s: "
        f"validation mIoU {100 * result.metrics['val/mIoU']:.1f}"
    )
    from resvision.datasets.segmentation import SyntheticSegmentation, voc_palette
    from resvision.tasks.segmentation.visualize import overlay, save_label_png

    seg = Segmenter.from_checkpoint(run, device="cpu")
    val = SyntheticSegmentation(6, cfg.data.synthetic_size, seed=cfg.data.synthetic_seed + 1)
    pred_dir = run / "predictions"
    pred_dir.mkdir(parents=True, exist_ok=True)
    palette = voc_palette()
    tiles = []
    for i in range(len(val)):
        image, mask = val.load(i)
        labels = seg.predict(image)[0]
        save_label_png(labels, pred_dir / f"val_{i}.png", palette)
        tiles.append(
            np.concatenate([image, overlay(image, labels, palette, 0.6), palette[mask]], 0)
        )
    import cv2

    cv2.imwrite(
        str(pred_dir / "overlays.jpg"), cv2.cvtColor(np.concatenate(tiles, 1), cv2.COLOR_RGB2BGR)
    )
    print(
        f"per-class table: {run / 'eval' / 'per_class.md'}; confusion matrix: "
        f"{run / 'eval' / 'confusion.png'}"
    )
    print(
        f"overlays (image / prediction / ground truth): {pred_dir / 'overlays.jpg'}; plots: "
        f"{run / 'plots'}"
    )


def demo_detection(out: Path) -> None:
    import cv2

    from resvision.datasets.detection import DetectionDataset, synthetic_annotations
    from resvision.tasks.detection.config import PRESETS
    from resvision.tasks.detection.inference import Detector
    from resvision.tasks.detection.task import VAL_SEED_OFFSET, DetectionTask
    from resvision.tasks.detection.visualize import class_colours, draw_detections
    from resvision.tasks.engine.config import apply_overrides
    from resvision.tasks.engine.loop import train

    print(
        "\n== Detection and instance segmentation: Mask R-CNN + FPN (resnet18) trained from "
        "scratch on synthetic shapes, CPU ==\n"
    )
    run = out / "detection"
    cfg = apply_overrides(PRESETS["mask_rcnn_r18_fpn_synthetic"](), [f"runtime.output_dir={run}"])
    t0 = time.perf_counter()
    result = train(DetectionTask(), cfg)
    m = result.metrics
    print(
        f"\ntrained {result.iteration} iterations in {time.perf_counter() - t0:.0f} s: validation "
        f"box AP {100 * m['val/AP']:.1f}, AP50 {100 * m['val/AP50']:.1f}; mask AP "
        f"{100 * m['val/mask/AP']:.1f}, AP50 {100 * m['val/mask/AP50']:.1f}"
    )
    det = Detector.from_checkpoint(run, device="cpu")
    d = cfg.data
    seed = d.synthetic_seed + VAL_SEED_OFFSET
    val = DetectionDataset(
        synthetic_annotations(6, seed, d.synthetic_min_side, d.synthetic_max_side),
        None,
        synthetic_seed=seed,
    )
    pred_dir = run / "predictions"
    pred_dir.mkdir(parents=True, exist_ok=True)
    colours = class_colours(len(det.class_names))
    for i in range(len(val)):
        image = val.read_image(i)
        (r,) = det.predict(image, score_threshold=0.5)
        drawn = draw_detections(
            image, r["boxes"], r["scores"], r["class_names"], colours[r["labels"]], r["masks"]
        )
        cv2.imwrite(str(pred_dir / f"val_{i}.png"), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    print(f"AP table: {run / 'eval' / 'ap.md'}; COCO results: {run / 'eval' / 'predictions.json'}")
    print(f"images with detections and their masks: {pred_dir}; plots: {run / 'plots'}")


def demo_face(out: Path) -> None:
    import json

    from resvision.tasks.engine.config import apply_overrides
    from resvision.tasks.engine.loop import train
    from resvision.tasks.face.config import PRESETS
    from resvision.tasks.face.task import FaceTask

    print("\n== Face embeddings: iResNet-18 + ArcFace on synthetic identities, CPU ==\n")
    run = out / "face"
    cfg = apply_overrides(PRESETS["iresnet18_synthetic"](), [f"runtime.output_dir={run}"])
    t0 = time.perf_counter()
    result = train(FaceTask(), cfg)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    curve = [(r["iteration"], r["val/acc"]) for r in records if "val/acc" in r]
    print(f"\ntrained {result.iteration} iterations in {time.perf_counter() - t0:.0f} s")
    print(
        "held-out verification accuracy (identities never seen in training; chance 50%): "
        + ", ".join(f"it {it}: {100 * a:.1f}%" for it, a in curve)
    )
    m = result.metrics
    name = next(k.split("/")[1] for k in m if k.count("/") == 2)
    print(
        f"ROC AUC {m[f'val/{name}/auc']:.3f}, TAR@FAR=1e-1 "
        f"{100 * m[f'val/{name}/tar@far1e-1']:.1f}%"
    )
    print(f"ROC curve: {run / 'eval' / 'roc.png'}; plots: {run / 'plots'}")


def demo_face_detection(out: Path) -> None:
    from .face_detection_demo import demo_face_detection as run_demo

    run_demo(out)


DEMOS = {
    "backbones": demo_backbones,
    "segmentation": demo_segmentation,
    "detection": demo_detection,
    "face": demo_face,
    "face-detection": demo_face_detection,
}


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="folder for the demo's runs")
    p.add_argument(
        "--only", nargs="+", choices=list(DEMOS), default=list(DEMOS), help="parts to run"
    )


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    for part in args.only:
        DEMOS[part](out)
    return 0


DEMO = Command(
    "the built-in demo (no download): backbones, then each task on synthetic data",
    _arguments,
    run,
    description="The built-in demo, what `make demo` runs: the backbone registry on a real "
    "photo, then each task trained from scratch and evaluated on its built-in synthetic data, "
    "on the CPU, with no download, ending with the face pipeline (photos -> faces -> "
    "embeddings -> identities). Runs, predictions and plots go under --out.",
)
