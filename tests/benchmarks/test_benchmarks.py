"""``resvision benchmark <task>`` runs small on a CPU and its parity checks hold: the figures are
worth reading only when both sides compute the same thing."""

from __future__ import annotations

import json

from resvision.tools.cli import main


def test_segmentation_benchmark_times_the_same_function_as_smp(capsys):
    argv = [
        "benchmark",
        "segmentation",
        "--backbone",
        "resnet18",
        "--batch",
        "1",
        "--size",
        "64",
        "--steps",
        "1",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "resvision unet-resnet18 default" in out and "smp naive fp32" in out
    assert "same function (smp's model holding resvision's weights): yes" in out


def test_detection_benchmark_evaluates_as_pycocotools(capsys):
    argv = [
        "benchmark",
        "detection",
        "--device",
        "cpu",
        "--batch",
        "1",
        "--size",
        "128",
        "192",
        "--steps",
        "1",
        "--eval-images",
        "40",
        "--dataset-images",
        "300",
        "--detections",
        "10",
        "--rounds",
        "1",
        "--skip",
        "models",  # Faster R-CNN: the same code as the Mask R-CNN rows, without the masks
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "torchvision maskrcnn_resnet50_fpn" in out and "resvision Mask R-CNN" in out
    assert "resvision DetectionDataset" in out
    ours = [line for line in out.splitlines() if "resvision (vernier)" in line]
    assert [line.split("|")[1].strip() for line in ours] == ["bbox", "segm"]
    for line in ours:  # the same 12 stats as pycocotools, box and mask
        assert line.rstrip(" |").endswith("yes")
    assert "with masks" in out


def test_face_benchmark_verification_and_ijb_are_identical_to_the_loops(capsys):
    argv = [
        "benchmark",
        "face",
        "--device",
        "cpu",
        "--backbone",
        "iresnet18",
        "--batch",
        "2",
        "--classes",
        "50",
        "--size",
        "112",
        "--steps",
        "1",
        "--pairs",
        "600",
        "--ijb-scale",
        "0.003",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "arcface_torch way" in out
    vectorized = next(line for line in out.splitlines() if "resvision vectorized" in line)
    assert vectorized.rstrip(" |").endswith("yes")  # every figure equal to the loop's
    # the IJB-C protocol (here 0.3% of its size) against InsightFace's loops
    assert "1,408 images, 69 templates, 590 pairs (59 genuine)" in out
    assert "identical to the loops: TAR@FAR and AUC yes, 1:N TPIR and rank-N yes" in out
    assert "reading the meta files" in out


def test_benchmarks_are_not_installed_but_reachable_from_the_tree():
    from resvision.tools.benchmark_cmd import benchmarks_folder, load

    assert (benchmarks_folder() / "timing.py").is_file()
    assert callable(load("detection").main)


def test_depth_benchmark_measures_both_settings_in_fresh_processes(tmp_path, capsys):
    """One tiny DeepLabV3+ R-101 step without and with activation checkpointing, each in its own
    process: both rows and the json record (memory and time per setting) come out."""
    from resvision.tools.benchmark_cmd import load

    out_json = tmp_path / "depth.json"
    args = ["--cases", "deeplab", "--deeplab-batch", "2", "--deeplab-size", "64"]
    assert (
        load("depth").main([*args, "--steps", "1", "--device", "cpu", "--json", str(out_json)]) == 0
    )
    out = capsys.readouterr().out
    assert "| DeepLabV3+ R-101 (OS 8) | 2 x 64x64 | off |" in out
    assert "| DeepLabV3+ R-101 (OS 8) | 2 x 64x64 | on |" in out
    (result,) = json.loads(out_json.read_text())["results"]
    assert result["off"]["peak_mib"] > 0 and result["on"]["peak_mib"] > 0
    assert result["off"]["step_s"] > 0 and result["on"]["step_s"] > 0
