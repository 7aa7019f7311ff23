"""Training on real photos and synthetic data; the predict, eval and export commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from resvision.tasks.engine.config import apply_overrides
from resvision.tasks.engine.loop import train
from resvision.tasks.segmentation import SegmentationTask
from resvision.tasks.segmentation.config import PRESETS
from resvision.tools.cli import main


@pytest.mark.slow
def test_fits_the_three_voc_photos(voc_sample, tmp_path):
    """A U-Net from scratch fits the 3 VOC photos (void border ignored) to mIoU >= 0.8."""
    cfg = apply_overrides(
        PRESETS["unet_r18_synthetic"](),
        [
            "data.source=voc",
            f"data.root={voc_sample}",
            "data.val_split=train",
            "data.scale=[176,132]",
            "data.ratio_range=[0.9,1.1]",
            "data.crop_size=[132,176]",
            "data.photometric=false",
            "data.batch_size=3",
            "inference.test_size=[176,132]",
            "schedule.iterations=300",
            "schedule.warmup_iterations=10",
            "optim.lr=3e-3",
            "optim.reference_batch_size=3",
            "loss.dice=1.0",
            "model.unet_channels=[64,48,32,24,16]",
            "runtime.eval_period=300",
            "runtime.checkpoint_period=300",
            "runtime.log_period=50",
            "runtime.tensorboard=false",
            f"runtime.output_dir={tmp_path}",
        ],
    )
    result = train(SegmentationTask(), cfg)
    present = {k for k in result.metrics if k.startswith("val/IoU/")}
    assert present == {
        f"val/IoU/{c}" for c in ("_background_", "bottle", "bus", "car", "chair", "person", "sofa")
    }
    assert result.metrics["val/mIoU"] >= 0.8, result.metrics


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A DeepLabV3+ trained for a few iterations on synthetic data (the CLI tests use it)."""
    out = tmp_path_factory.mktemp("seg_run")
    argv = [
        "train",
        "segmentation",
        "--preset",
        "deeplabv3plus_r18_synthetic",
        "--output-dir",
        str(out),
        "--set",
        "schedule.iterations=6",
        "data.synthetic_train=16",
        "data.synthetic_val=4",
        "data.batch_size=4",
        "data.synthetic_size=64",
        "data.crop_size=[64,64]",
        "runtime.eval_period=6",
        "runtime.tensorboard=false",
    ]
    assert main(argv) == 0
    return out


def test_training_run_writes_reports(trained_run):
    assert (trained_run / "best.pt").is_file() and (
        trained_run / "eval" / "confusion.png"
    ).is_file()
    table = (trained_run / "eval" / "per_class.md").read_text()
    assert "| background |" in table and "mIoU" in table
    records = [json.loads(x) for x in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert any("val/mIoU" in r for r in records)


def test_predict_writes_label_pngs_and_overlays(trained_run, tmp_path, capsys):
    rgb = (np.random.default_rng(0).random((45, 61, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "in.jpg")
    out = tmp_path / "pred"
    assert (
        main(
            [
                "predict",
                "segmentation",
                str(tmp_path / "in.jpg"),
                "--checkpoint",
                str(trained_run),
                "--out",
                str(out),
                "--tta",
            ]
        )
        == 0
    )
    labels = Image.open(out / "in.png")
    assert labels.mode == "P" and labels.size == (61, 45)
    assert np.asarray(labels).max() < 5
    width, height = Image.open(out / "in_overlay.jpg").size  # the picture, then its legend
    assert width == 61 and height >= 45
    assert "1 image in" in capsys.readouterr().out


def test_eval_command_prints_metrics(trained_run, capsys):
    assert main(["eval", "segmentation", "--checkpoint", str(trained_run / "last.pt")]) == 0
    out = capsys.readouterr().out
    assert "mIoU:" in out and "aAcc:" in out


def test_export_onnx_dynamic_and_checked(trained_run, tmp_path, capsys):
    path = tmp_path / "seg.onnx"
    assert (
        main(["export", "segmentation", "--checkpoint", str(trained_run), "--out", str(path)]) == 0
    )
    out = capsys.readouterr().out
    assert "(2, 3, 97, 131)" in out and "(2, 3, 160, 96)" in out and "labels agree 100.00%" in out
    import onnx

    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "", "height", "width"]
