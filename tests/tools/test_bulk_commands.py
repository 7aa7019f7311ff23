"""``predict`` and ``face embed`` on collections, as a user runs them (issue 19): ``--workers``
changes no byte of the outputs, a run killed with SIGKILL continues with ``--resume`` to exactly
the uninterrupted run's files, an unfinished run is never mixed into silently, and ``torchrun``
shares the images among processes that together write what one process writes."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from resvision.tasks.detection.inference import Detector
from resvision.tasks.detection.visualize import class_colours, draw_detections
from resvision.tasks.engine.bulk import scan_log
from resvision.tools.cli import main

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _images(folder: Path, n: int, *, seed: int = 0, sizes=(24, 64)) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = rng.integers(*sizes, 2)
        path = folder / f"p{i % 3}" / f"{i:03d}.{'jpg' if i % 2 else 'png'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def _cli(*args: str, torchrun: int = 0) -> list[str]:
    if torchrun:
        return [
            *(sys.executable, "-m", "torch.distributed.run", "--standalone"),
            f"--nproc-per-node={torchrun}",
            *("-m", "resvision.tools", *args),
        ]
    return [sys.executable, "-m", "resvision.tools", *args]


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def test_predict_detection_writes_the_same_files_with_any_number_of_workers(det_run, tmp_path):
    images = _images(tmp_path / "images", 10)
    outs = {}
    for workers in (0, 2):
        out = outs[workers] = tmp_path / f"w{workers}"
        argv = ["predict", "detection", str(images), "--checkpoint", str(det_run)]
        assert main([*argv, "--out", str(out), "--workers", str(workers), "--device", "cpu"]) == 0
    assert _files(outs[0]) == _files(outs[2])  # drawn images and the three json files
    listed = json.loads((outs[2] / "coco_images.json").read_text())["images"]
    names = sorted(p.relative_to(images).as_posix() for p in images.rglob("*.*"))
    assert [p["file_name"] for p in listed] == names and [p["id"] for p in listed] == [
        *range(1, 11)
    ]
    assert not (outs[2] / ".resvision-parts").exists()
    # the Python predictor reads files in workers too, with the same results
    det = Detector.from_checkpoint(det_run, device="cpu")
    paths = [images / n for n in names]
    alone, workers = det.predict(paths, batch_size=3), det.predict(paths, batch_size=3, workers=2)
    for a, b in zip(alone, workers, strict=True):
        assert all(np.array_equal(a[k], b[k]) for k in ("boxes", "scores", "labels"))


def _kill_when(argv: list[str], parts: Path, records: int) -> None:
    """Runs ``argv`` and kills it (SIGKILL) once its parts hold ``records`` batch records."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        logs = parts.glob("*.log") if parts.is_dir() else []
        if sum(len(scan_log(p)) for p in logs) >= records:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)


def test_face_embed_killed_then_resumed_writes_the_uninterrupted_file(face_run, tmp_path, capsys):
    images = _images(tmp_path / "crops", 90, sizes=(28, 40))
    common = ["face", "embed", str(images), "--checkpoint", str(face_run), "--device", "cpu"]
    common += ["--batch-size", "2"]
    ref = tmp_path / "ref.npz"
    _run(_cli(*common, "--out", str(ref), "--workers", "0"))
    out = tmp_path / "out.npz"
    parts = tmp_path / "out.npz.parts"
    _kill_when(_cli(*common, "--out", str(out), "--workers", "1"), parts, random.randint(1, 12))
    done = sum(len(r.indices) for p in parts.glob("*.log") for r in scan_log(p))
    assert not out.exists() and 0 < done < 90
    # the same command without --resume refuses, in one line, before any work
    assert main([*common, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"unfinished run of this command is in {parts} ({done} of 90 images" in err
    assert "--resume" in err and "--overwrite" in err
    resumed = _run(_cli(*common, "--out", str(out), "--workers", "1", "--resume"))
    assert f"({done} done before this resume)" in resumed.stdout
    a, b = _npz(ref), _npz(out)
    assert a.keys() == b.keys() == {"embeddings", "names", "source"}
    assert all(np.array_equal(a[k], b[k]) for k in a)  # to the bit, in input order
    assert not parts.exists()


def test_torchrun_processes_share_face_embed_and_write_one_processs_file(face_run, tmp_path):
    images = _images(tmp_path / "crops", 24, sizes=(28, 40))
    common = ["face", "embed", str(images), "--checkpoint", str(face_run), "--device", "cpu"]
    common += ["--batch-size", "2", "--workers", "0"]
    _run(_cli(*common, "--out", str(tmp_path / "one.npz")))
    two = _run(_cli(*common, "--out", str(tmp_path / "two.npz"), torchrun=2))
    assert two.stdout.count("24 images ->") == 1  # rank 0 reports for both
    a, b = _npz(tmp_path / "one.npz"), _npz(tmp_path / "two.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    with contextlib.suppress(FileNotFoundError):
        assert not any((tmp_path / "two.npz.parts").iterdir())


def test_predict_detection_with_masks_same_with_workers_and_after_kill_and_resume(
    mask_run, tmp_path
):
    """A Mask R-CNN's masks stream through the parts as RLE: coco_results.json's segmentations
    (and the drawn, mask-filled images) are the same bytes from an uninterrupted run without
    workers as from a run with 2 workers killed (SIGKILL) and resumed, and each decodes to the
    Python predictor's mask of that detection."""
    images = _images(tmp_path / "images", 8)
    common = ["predict", "detection", str(images), "--checkpoint", str(mask_run)]
    common += ["--device", "cpu", "--batch-size", "1", "--score-threshold", "0"]
    ref = tmp_path / "ref"
    _run(_cli(*common, "--out", str(ref), "--workers", "0"))
    out = tmp_path / "killed"
    argv = _cli(*common, "--out", str(out), "--workers", "2")
    _kill_when(argv, out / ".resvision-parts", random.randint(1, 6))
    assert not (out / "coco_results.json").exists()
    _run(_cli(*common, "--out", str(out), "--workers", "2", "--resume"))
    assert _files(out) == _files(ref)

    results = json.loads((ref / "coco_results.json").read_text())
    listed = json.loads((ref / "coco_images.json").read_text())["images"]
    assert results and all("segmentation" in r for r in results)
    det = Detector.from_checkpoint(mask_run, device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the commands ran (OMP_NUM_THREADS=1): the same arithmetic
    try:
        found = det.predict([images / p["file_name"] for p in listed], batch_size=1)
    finally:
        torch.set_num_threads(threads)
    filled = 0
    for picture, r in zip(listed, found, strict=True):
        own = [x for x in results if x["image_id"] == picture["id"]]
        assert len(own) == len(r["scores"]) and r["masks"].shape[1:] == (
            picture["height"],
            picture["width"],
        )
        assert all(x["segmentation"]["size"] == [picture["height"], picture["width"]] for x in own)
        if own:
            decoded = mask_utils.decode([x["segmentation"] for x in own]).transpose(2, 0, 1)
            assert np.array_equal(decoded.astype(bool), r["masks"])
        filled += int(r["masks"].any(axis=(1, 2)).sum())
    assert filled > 0  # not only empty masks
    # the drawn picture has the masks filled in (JPEG-compressed: nearer that than without)
    (picture, r) = next((p, r) for p, r in zip(listed, found) if r["masks"].any())
    rgb = np.asarray(Image.open(images / picture["file_name"]).convert("RGB"))
    colours = class_colours(len(det.class_names))[r["labels"]]
    args = (rgb, r["boxes"], r["scores"], r["class_names"], colours)
    drawn_path = (ref / picture["file_name"]).with_suffix(".jpg")
    drawn = np.asarray(Image.open(drawn_path).convert("RGB"), np.float32)
    filled, boxes_only = draw_detections(*args, r["masks"]), draw_detections(*args)
    apart = np.abs(filled.astype(np.float32) - boxes_only).max(-1) > 40  # where masks show
    assert apart.sum() > 20
    near = np.abs(drawn - filled)[apart].mean(), np.abs(drawn - boxes_only)[apart].mean()
    assert near[0] < 0.5 * near[1], near
