"""``resvision predict|export|benchmark face-detection``: faces with five landmarks.

The commands follow the rules of :mod:`.outputs`: every input gets its own outputs under its
relative path, nothing is written into an input folder or over an existing file without
``--overwrite``, and an unreadable image is skipped with a warning naming it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .export_cmd import add_common_arguments as add_export_arguments
from .export_cmd import output_path
from .outputs import BatchReport, check_outputs, collect_inputs, input_folders, output_stems, plural
from .predict import _batched, add_common_arguments, read_images
from .tasks import Command


# -- predict -----------------------------------------------------------------------------------
def _predict_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, batch_size=4)
    p.add_argument(
        "--score-threshold",
        type=float,
        default=0.5,
        help="lowest face score drawn and written to faces.json",
    )


def predict(args: argparse.Namespace) -> int:
    import cv2

    from resvision.tasks.face_detection.inference import FaceDetector
    from resvision.tasks.face_detection.visualize import draw_faces

    images = collect_inputs(args.inputs)
    stems = output_stems(images)
    out = Path(args.out)
    drawn = {i.path: out / f"{stems[i.path]}.jpg" for i in images}
    check_outputs(
        [*drawn.values(), out / "faces.json"],
        inputs=[i.path for i in images],
        input_folders=input_folders(args.inputs),
        overwrite=args.overwrite,
    )
    det = FaceDetector.from_checkpoint(args.checkpoint, device=args.device, overrides=args.set)
    report = BatchReport(strict=args.strict)
    records, count, t0 = [], 0, time.perf_counter()
    for batch in _batched(read_images(images, report, "images"), args.batch_size):
        found = det.detect(
            [rgb for _, rgb in batch],
            batch_size=args.batch_size,
            score_threshold=args.score_threshold,
        )
        for (item, rgb), r in zip(batch, found):
            count += len(r["scores"])
            records.append(
                {
                    "file_name": item.name,
                    "height": rgb.shape[0],
                    "width": rgb.shape[1],
                    "faces": [
                        {
                            "box": [round(float(v), 2) for v in box],
                            "score": round(float(score), 5),
                            "landmarks": [[round(float(v), 2) for v in pt] for pt in points],
                        }
                        for box, score, points in zip(r["boxes"], r["scores"], r["landmarks"])
                    ],
                }
            )
            captions = [f"{s:.2f}" for s in r["scores"]]
            picture = draw_faces(rgb, r["boxes"], r["landmarks"], captions)
            drawn[item.path].parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(drawn[item.path]), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
            report.done += 1
    (out / "faces.json").write_text(json.dumps(records, indent=1))
    took = time.perf_counter() - t0
    print(
        f"{report.summary()}, {plural(count, 'face')} with score >= {args.score_threshold} in "
        f"{took:.1f} s -> {out} (drawn images, faces.json: box xyxy, score and five landmarks "
        "per face)"
    )
    return report.exit_code()


PREDICT = Command(
    "drawn faces (boxes, five landmarks) and a json",
    _predict_arguments,
    predict,
    description="Detect faces with their five landmarks; write every image with its faces "
    "drawn (under its relative path) and faces.json (per image: box xyxy, score, landmarks: "
    "left eye, right eye, nose tip, left and right mouth corner).",
)


# -- export ------------------------------------------------------------------------------------
def _export_arguments(p: argparse.ArgumentParser) -> None:
    add_export_arguments(p, tolerance=1e-2, what="box or landmark difference in pixels")
    p.add_argument(
        "--check-images",
        nargs="*",
        default=[],
        help="photos to check on, one at a time at their own size (default: random images)",
    )


def export(args: argparse.Namespace) -> int:
    import numpy as np

    from resvision.datasets.images import expand_inputs, read_rgb
    from resvision.tasks.face_detection.export import CONTRACT, check
    from resvision.tasks.face_detection.export import export as export_model
    from resvision.tasks.face_detection.model import load_model

    out = output_path(args)
    model, _, _ = load_model(args.checkpoint, device="cpu")
    out = export_model(model, out, opset=args.opset)
    if args.check_images:
        batches = [
            read_rgb(f).transpose(2, 0, 1)[None].astype(np.float32)
            for f in expand_inputs(args.check_images)
        ]
    else:  # two sizes and two batch sizes: height, width and batch are dynamic
        rng = np.random.default_rng(0)
        batches = [
            (rng.random(s) * 255).astype(np.float32) for s in ((1, 3, 97, 131), (2, 3, 160, 96))
        ]
    ok = True
    for r in check(model, out, batches):
        worst = max(r["max_box_diff"], r["max_landmark_diff"])
        ok &= r["same_count"] and worst <= args.tolerance
        print(
            f"{r['shape']}: {r['faces']} faces, same count {r['same_count']}, max difference "
            f"box {r['max_box_diff']:.2e} px, landmarks {r['max_landmark_diff']:.2e} px, score "
            f"{r['max_score_diff']:.2e}"
        )
    if not ok:
        print(f"FAILED: onnxruntime and PyTorch disagree (tolerance {args.tolerance} px)")
        return 1
    print(f"wrote {out} ({CONTRACT})")
    return 0


EXPORT = Command(
    "ONNX with dynamic batch, height and width",
    _export_arguments,
    export,
    description="Export the face detector (decoding and NMS included) to ONNX with dynamic "
    "batch, height and width, checked against PyTorch with onnxruntime.",
)


# -- benchmark ---------------------------------------------------------------------------------
def _benchmark_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's options (--help)")


def benchmark(args: argparse.Namespace) -> int:
    from .benchmark_cmd import load

    return int(load("face_detection").main(list(args.args)) or 0)


BENCHMARK = Command(
    "ours vs the PyTorch port's RetinaFace: images/s, identical detections, training step",
    _benchmark_arguments,
    benchmark,
    passthrough=True,
)
