"""``resvision predict|export|benchmark detection``."""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from resvision.datasets.images import read_rgb
from resvision.heads.detection import FasterRCNN

from .evaluation import rows_to_json

FMT = argparse.ArgumentDefaultsHelpFormatter


def expand_inputs(inputs: list[str]) -> list[Path]:
    from resvision.tasks.segmentation.cli import expand_inputs as expand

    return expand(inputs)


def draw_detections(
    image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, names: np.ndarray, colours: np.ndarray
) -> np.ndarray:
    """Boxes with "name score" captions on a copy of ``image`` (RGB)."""
    out = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 400))
    for box, score, name, colour in zip(boxes, scores, names, colours):
        x1, y1, x2, y2 = (int(np.rint(v)) for v in box)
        c = tuple(int(v) for v in colour)
        cv2.rectangle(out, (x1, y1), (x2, y2), c, thickness)
        text = f"{name} {score:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        cv2.rectangle(out, (x1, max(0, y1 - th - 4)), (x1 + tw + 2, max(th + 4, y1)), c, -1)
        cv2.putText(
            out,
            text,
            (x1 + 1, max(th + 1, y1 - 3)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
    return out


def class_colours(num: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(40, 230, size=(num + 1, 3))


# -- predict -----------------------------------------------------------------------------------
def predict_main(argv: list[str]) -> int:
    from .inference import Detector

    p = argparse.ArgumentParser(
        prog="resvision predict detection",
        formatter_class=FMT,
        description="Detect objects; write a COCO-results json and images with drawn boxes, labels and scores.",
    )
    p.add_argument("inputs", nargs="+", help="image files and/or folders")
    p.add_argument("--checkpoint", required=True, help="a run folder (best.pt) or checkpoint file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument(
        "--score-threshold",
        type=float,
        default=0.3,
        help="lowest score drawn (the json keeps every detection)",
    )
    p.add_argument("--tta", action="store_true", help="flip + several scales, merged by NMS")
    p.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="model.* overrides (e.g. model.score_thresh=0.1)",
    )
    args = p.parse_args(argv)
    det = Detector.from_checkpoint(args.checkpoint, device=args.device, overrides=args.set)
    files = expand_inputs(args.inputs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    colours = class_colours(len(det.class_names))
    results, t0, count = [], time.perf_counter(), 0
    for start in range(0, len(files), args.batch_size):
        chunk = files[start : start + args.batch_size]
        images = [read_rgb(f) for f in chunk]
        for path, image, r in zip(
            chunk, images, det.predict(images, batch_size=args.batch_size, tta=args.tta)
        ):
            for box, score, label in zip(r["boxes"], r["scores"], r["labels"]):
                x1, y1, x2, y2 = (float(v) for v in box)
                results.append({"file_name": path.name, "category_id": int(label), "category": det.class_names[label - 1],
                                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)], "score": round(float(score), 5)})  # fmt: skip
            shown = r["scores"] >= args.score_threshold
            count += int(shown.sum())
            drawn = draw_detections(
                image,
                r["boxes"][shown],
                r["scores"][shown],
                r["class_names"][shown],
                colours[r["labels"][shown]],
            )
            cv2.imwrite(str(out / f"{path.stem}.jpg"), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    (out / "detections.json").write_text(json.dumps(results))
    print(
        f"{len(files)} images, {count} detections with score >= {args.score_threshold} in {time.perf_counter() - t0:.1f} s -> {out}"
    )
    return 0


# -- export ------------------------------------------------------------------------------------
class ExportWrapper(nn.Module):
    """``images: (N, 3, H, W)`` float pixels in [0, 255] (H, W fixed at export; N dynamic) ->
    ``boxes (N, D, 4)`` xyxy in input pixels, ``scores (N, D)``, ``labels (N, D)`` (0 = empty
    slot), ``num_detections (N,)``; the network sees the input resized as in PyTorch eval."""

    def __init__(self, model: FasterRCNN, size: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        h, w = size
        scale = min(model.transform.min_size[-1] / min(h, w), model.transform.max_size / max(h, w))
        self.resized = (int(h * scale), int(w * scale))
        div = model.transform.size_divisible
        self.padded = (-(-self.resized[0] // div) * div, -(-self.resized[1] // div) * div)
        self.size = size

    def forward(self, images: torch.Tensor):
        x = self.model.normalization.normalize(images)
        x = F.interpolate(x, size=self.resized, mode="bilinear", align_corners=False)
        x = F.pad(x, (0, self.padded[1] - self.resized[1], 0, self.padded[0] - self.resized[0]))
        sizes = torch.tensor([self.resized], dtype=torch.int64).expand(x.shape[0], 2)
        boxes, scores, labels, valid = self.model.detect(x, sizes)
        ratio = torch.tensor(
            [self.size[1] / self.resized[1], self.size[0] / self.resized[0]] * 2, dtype=boxes.dtype
        )
        return boxes * ratio, scores, labels, valid.sum(1)


def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Resize keeping the aspect ratio to fit ``size`` and pad (bottom/right) with black."""
    h, w = image.shape[:2]
    scale = min(size[0] / h, size[1] / w)
    resized = cv2.resize(
        image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR
    )
    out = np.zeros((*size, 3), np.uint8)
    out[: resized.shape[0], : resized.shape[1]] = resized
    return out, scale


def export_onnx(model: FasterRCNN, path: Path, size: tuple[int, int], opset: int = 17) -> Path:
    wrapper = ExportWrapper(model.float().cpu(), size).eval()
    example = torch.rand(2, 3, *size) * 255
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(
            wrapper, (example,), str(path), input_names=["images"], output_names=["boxes", "scores", "labels", "num_detections"],
            dynamic_axes={"images": {0: "batch"}, "boxes": {0: "batch"}, "scores": {0: "batch"}, "labels": {0: "batch"}, "num_detections": {0: "batch"}},
            opset_version=opset, dynamo=False,
        )  # fmt: skip
    return path


def check_onnx(model: FasterRCNN, path: Path, batches: list[np.ndarray]) -> list[dict]:
    """onnxruntime vs PyTorch (the same batched path) on each ``(N, 3, H, W)`` batch."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    size = tuple(batches[0].shape[-2:])
    wrapper = ExportWrapper(model.float().cpu(), size).eval()
    report = []
    for batch in batches:
        x = batch.astype(np.float32)
        with torch.no_grad():
            ref = [t.numpy() for t in wrapper(torch.from_numpy(x))]
        got = session.run(None, {"images": x})
        rows = {
            "batch": x.shape[0],
            "detections": int(ref[3].sum()),
            "same_count": bool((ref[3] == got[3]).all()),
        }
        diffs, same_labels = [0.0], True
        for i in range(x.shape[0]):
            n = int(ref[3][i])
            if int(got[3][i]) != n:
                continue
            if n:
                diffs.append(float(np.abs(ref[0][i, :n] - got[0][i, :n]).max()))
                same_labels &= bool((ref[2][i, :n] == got[2][i, :n]).all())
        rows.update(max_box_diff=max(diffs), same_labels=same_labels)
        report.append(rows)
    return report


def export_main(argv: list[str]) -> int:
    from .task import DetectionTask

    p = argparse.ArgumentParser(prog="resvision export detection", formatter_class=FMT,
                                description="Export to ONNX with a dynamic batch dimension (input size fixed at export) and check it against PyTorch with onnxruntime.")  # fmt: skip
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--format", choices=("onnx",), default="onnx")
    p.add_argument(
        "--out", default=None, help="output file (default: model.onnx next to the checkpoint)"
    )
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="input size (default: the model's test size, landscape)",
    )
    p.add_argument("--opset", type=int, default=17)
    p.add_argument(
        "--check-images",
        nargs="*",
        default=[],
        help="real photos to check on (letterboxed to --size); default: random",
    )
    p.add_argument(
        "--tolerance", type=float, default=1e-2, help="largest allowed box difference in pixels"
    )
    args = p.parse_args(argv)
    model, cfg, _ = DetectionTask().load_for_inference(args.checkpoint, device="cpu")
    size = (
        tuple(args.size)
        if args.size
        else (cfg.model.test_min_size, -(-cfg.model.test_max_size // 32) * 32)
    )
    ckpt = Path(args.checkpoint)
    out = Path(args.out) if args.out else (ckpt if ckpt.is_dir() else ckpt.parent) / "model.onnx"
    export_onnx(model, out, size, args.opset)
    if args.check_images:
        images = [
            letterbox(read_rgb(f), size)[0].transpose(2, 0, 1)
            for f in expand_inputs(args.check_images)
        ]
    else:
        rng = np.random.default_rng(0)
        images = [(rng.random((3, *size)) * 255).astype(np.uint8) for _ in range(3)]
    batches = [np.stack(images[:1]), np.stack(images)]  # two batch sizes: the batch is dynamic
    ok = True
    for r in check_onnx(model, out, batches):
        ok &= r["same_count"] and r["same_labels"] and r["max_box_diff"] <= args.tolerance
        print(
            f"batch {r['batch']}: {r['detections']} detections, same count {r['same_count']}, same labels {r['same_labels']}, max box difference {r['max_box_diff']:.2e} px"
        )
    if not ok:
        print(f"FAILED: onnxruntime and PyTorch disagree (tolerance {args.tolerance} px)")
        return 1
    print(f"wrote {out} (input: images float32 (N, 3, {size[0]}, {size[1]}) pixels 0-255, RGB)")
    return 0


def benchmark_main(argv: list[str]) -> int:
    from .benchmark import main

    return main(argv)


__all__ = [
    "ExportWrapper",
    "check_onnx",
    "draw_detections",
    "export_onnx",
    "letterbox",
    "predict_main",
    "rows_to_json",
]
