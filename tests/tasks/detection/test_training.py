"""Training on real photos and synthetic data; the predict, eval and export commands (on a
Mask R-CNN: its boxes are Faster R-CNN's, the task contract test runs a Faster R-CNN)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from resvision.tasks.detection import DetectionTask
from resvision.tasks.detection.config import PRESETS
from resvision.tasks.engine.config import apply_overrides
from resvision.tasks.engine.loop import train
from resvision.tools.cli import main


@pytest.mark.slow
def test_fits_the_three_voc_photos(voc_sample, tmp_path):
    """ResNet-18 FPN from scratch fits the labelme COCO export (ids from 0) to box AP50 >= 0.9."""
    ann = voc_sample / "instances_coco.json"
    cfg = apply_overrides(
        PRESETS["faster_rcnn_r18_fpn_synthetic"](),
        [
            "data.source=coco",
            f"data.train_json={ann}",
            f"data.val_json={ann}",
            "data.train_sizes=[224,256]",
            "data.max_size=352",
            "data.batch_size=3",
            "model.test.min_size=256",
            "model.test.max_size=352",
            "schedule.iterations=130",
            "schedule.policy=constant",
            "schedule.warmup_iterations=20",
            "optim.reference_batch_size=3",
            "runtime.eval_period=130",
            "runtime.checkpoint_period=130",
            "runtime.tensorboard=false",
            f"runtime.output_dir={tmp_path}",
        ],
    )
    result = train(DetectionTask(), cfg)
    assert result.metrics["val/AP50"] >= 0.9, result.metrics
    predictions = json.loads((tmp_path / "eval" / "predictions.json").read_text())
    assert {p["image_id"] for p in predictions} == {0, 1, 2}  # the json's own ids, 0 included


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """The synthetic Mask R-CNN, 60 iterations."""
    out = tmp_path_factory.mktemp("det_run")
    argv = [
        "train",
        "detection",
        "--preset",
        "mask_rcnn_r18_fpn_synthetic",
        "--output-dir",
        str(out),
        "--set",
        "schedule.iterations=60",
        "schedule.warmup_iterations=10",
        "data.synthetic_train=120",
        "data.synthetic_val=24",
        "runtime.eval_period=20",
        "runtime.tensorboard=false",
    ]
    assert main(argv) == 0
    return out


def test_learns_on_synthetic_data(trained_run):
    """Box and mask AP rise (the synthetic scenes' masks are exact); best.pt follows mask AP
    (the preset's runtime.best_metric)."""
    records = [json.loads(x) for x in (trained_run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    ap50 = [r["val/AP50"] for r in records if "val/AP50" in r]
    mask_ap50 = [r["val/mask/AP50"] for r in records if "val/mask/AP50" in r]
    assert losses[-1] < 0.6 * losses[0]
    assert ap50[-1] > 0.15 and ap50[-1] > ap50[0]
    assert mask_ap50[-1] > 0.15 and mask_ap50[-1] > mask_ap50[0]
    predictions = json.loads((trained_run / "eval" / "predictions.json").read_text())
    assert {"bbox", "segmentation", "score"} <= set(predictions[0])
    table = (trained_run / "eval" / "ap.md").read_text()
    assert "AP50" in table and "| ellipse" in table and "mask AP" in table
    best = torch.load(trained_run / "best.pt", weights_only=True)["progress"]
    mask_ap = [r["val/mask/AP"] for r in records if "val/mask/AP" in r]
    assert best["best_metric"] == pytest.approx(max(mask_ap))


def test_predict_writes_json_and_drawn_images(trained_run, voc_sample, tmp_path, capsys):
    out = tmp_path / "pred"
    photo = voc_sample / "JPEGImages" / "2011_000003.jpg"
    assert (
        main(
            [
                "predict",
                "detection",
                str(photo),
                str(voc_sample / "JPEGImages"),
                "--checkpoint",
                str(trained_run),
                "--out",
                str(out),
                "--score-threshold",
                "0.1",
            ]
        )
        == 0
    )
    results = json.loads((out / "detections.json").read_text())
    assert results and {"file_name", "category", "bbox", "score"} <= set(results[0])
    assert Image.open(out / "2011_000003.jpg").size == Image.open(photo).size
    coco = json.loads((out / "coco_results.json").read_text())
    images = {im["id"]: im for im in json.loads((out / "coco_images.json").read_text())["images"]}
    assert len(coco) == len(results)
    for record in coco[:5]:  # masks as RLE at their image's size
        im = images[record["image_id"]]
        assert record["segmentation"]["size"] == [im["height"], im["width"]]
        assert mask_utils.decode(record["segmentation"]).shape == (im["height"], im["width"])
    assert "3 images" in capsys.readouterr().out  # the photo named twice is predicted once


def test_detector_api(trained_run, voc_sample):
    from resvision.tasks.detection import Detector

    det = Detector.from_checkpoint(trained_run, device="cpu")
    image = np.asarray(Image.open(voc_sample / "JPEGImages" / "2011_000025.jpg").convert("RGB"))
    (a,) = det.predict(image)
    (b,) = det.predict(voc_sample / "JPEGImages" / "2011_000025.jpg")
    assert a["boxes"].shape[1] == 4 and np.allclose(a["boxes"], b["boxes"])
    assert (
        a["boxes"][:, 2].max() <= image.shape[1] + 1e-3
        and a["boxes"][:, 3].max() <= image.shape[0] + 1e-3
    )
    assert set(a["class_names"]) <= set(det.class_names)
    assert a["masks"].shape == (len(a["scores"]), *image.shape[:2]) and a["masks"].dtype == bool
    (p,) = det.predict(image, mask_threshold=None)
    assert p["masks"].dtype == np.float32 and np.array_equal(p["masks"] > 0.5, a["masks"])
    (c,) = det.predict(image, tta=True)
    assert len(c["scores"]) <= 100 and c["masks"].shape == (len(c["scores"]), *image.shape[:2])


def test_eval_command_with_both_backends(trained_run, capsys):
    assert main(["eval", "detection", "--checkpoint", str(trained_run / "last.pt")]) == 0
    a = capsys.readouterr().out
    assert (
        main(
            [
                "eval",
                "detection",
                "--checkpoint",
                str(trained_run / "last.pt"),
                "--set",
                "evaluation.backend=pycocotools",
            ]
        )
        == 0
    )
    b = capsys.readouterr().out
    pick = lambda out: [line for line in out.splitlines() if "AP" in line]  # noqa: E731
    assert pick(a) == pick(b) and pick(a)
    assert any(line.startswith("mask/AP:") for line in pick(a))


def test_export_onnx_dynamic_batch_checked_on_real_photos(
    trained_run, voc_sample, tmp_path, capsys
):
    path = tmp_path / "det.onnx"
    argv = [
        "export",
        "detection",
        "--checkpoint",
        str(trained_run),
        "--out",
        str(path),
        "--size",
        "160",
        "224",
        "--check-images",
        str(voc_sample / "JPEGImages"),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "batch 1:" in out and "batch 3:" in out and "same labels True" in out
    assert "max mask difference" in out
    import onnx

    graph = onnx.load(str(path)).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 160, 224]
    masks = next(o for o in graph.output if o.name == "masks").type.tensor_type.shape.dim
    assert masks[0].dim_param == "batch" and [d.dim_value for d in masks[2:]] == [160, 224]
