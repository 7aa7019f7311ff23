"""``resvision export TASK --checkpoint RUN``: ONNX models checked against PyTorch with
onnxruntime before they are reported as written."""

from __future__ import annotations

import argparse
from pathlib import Path

from .outputs import check_outputs
from .tasks import Command


def add_common_arguments(p: argparse.ArgumentParser, *, tolerance: float, what: str) -> None:
    p.add_argument(
        "--checkpoint", required=True, help="a run folder (its best.pt) or a checkpoint file"
    )
    p.add_argument("--format", choices=("onnx",), default="onnx", help="the export format")
    p.add_argument(
        "--out", default=None, help="output file (default: model.onnx next to the checkpoint)"
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    p.add_argument("--tolerance", type=float, default=tolerance, help=f"largest allowed {what}")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def output_path(args: argparse.Namespace) -> Path:
    """``--out``, or ``model.onnx`` next to the checkpoint; refused before any work if it
    exists (without ``--overwrite``) or cannot be written."""
    ckpt = Path(args.checkpoint)
    out = Path(args.out) if args.out else (ckpt if ckpt.is_dir() else ckpt.parent) / "model.onnx"
    check_outputs([out], inputs=[ckpt], overwrite=args.overwrite)
    return out


# -- segmentation ------------------------------------------------------------------------------
def _segmentation_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, tolerance=1e-3, what="|onnx - torch| logit difference")
    p.add_argument(
        "--check-images",
        nargs="*",
        default=[],
        help="images to compare on (default: two random images of different sizes)",
    )


def export_segmentation(args: argparse.Namespace) -> int:
    import numpy as np

    from resvision.datasets.images import read_rgb
    from resvision.datasets.inputs import expand_inputs
    from resvision.tasks.segmentation.export import INPUT_CONTRACT, check, export
    from resvision.tasks.segmentation.model import load_model

    out = output_path(args)
    model, _, meta = load_model(args.checkpoint, device="cpu")
    out = export(model, out, opset=args.opset, class_names=meta["class_names"])
    if args.check_images:
        images = [read_rgb(i.path) for i in expand_inputs(args.check_images)]
    else:
        rng = np.random.default_rng(0)
        images = [(rng.random((h, w, 3)) * 255).astype(np.uint8) for h, w in ((97, 131), (160, 96))]
    worst = 0.0
    for r in check(model, out, images):
        worst = max(worst, r["max_abs_diff"])
        print(
            f"onnxruntime vs torch on {r['shape']}: max |diff| {r['max_abs_diff']:.2e}, "
            f"labels agree {100 * r['label_agreement']:.2f}%"
        )
    if worst > args.tolerance:
        print(f"FAILED: difference {worst:.2e} above --tolerance {args.tolerance:g}")
        return 1
    print(f"wrote {out} ({INPUT_CONTRACT}; class names in the model's metadata)")
    return 0


SEGMENTATION = Command(
    "ONNX with dynamic batch, height and width",
    _segmentation_arguments,
    export_segmentation,
    description="Export to ONNX (dynamic batch, height and width) and check it against PyTorch "
    "with onnxruntime.",
)


# -- detection ---------------------------------------------------------------------------------
def _detection_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, tolerance=1e-2, what="box difference in pixels")
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="input size (default: the model's test size, landscape)",
    )
    p.add_argument(
        "--check-images",
        nargs="*",
        default=[],
        help="real photos to check on (letterboxed to --size); default: random",
    )
    p.add_argument(
        "--mask-tolerance",
        type=float,
        default=1e-3,
        help="Mask R-CNN: largest allowed mask probability difference",
    )


def export_detection(args: argparse.Namespace) -> int:
    import numpy as np

    from resvision.datasets.images import read_rgb
    from resvision.datasets.inputs import expand_inputs
    from resvision.tasks.detection.export import check, export, letterbox
    from resvision.tasks.detection.model import load_model

    out = output_path(args)
    model, cfg, meta = load_model(args.checkpoint, device="cpu")
    test = cfg.model.test
    size = tuple(args.size) if args.size else (test.min_size, -(-test.max_size // 32) * 32)
    out = export(model, out, size, args.opset, class_names=meta["class_names"])
    if args.check_images:
        files = expand_inputs(args.check_images)
        images = [letterbox(read_rgb(f.path), size)[0].transpose(2, 0, 1) for f in files]
    else:
        rng = np.random.default_rng(0)
        images = [(rng.random((3, *size)) * 255).astype(np.uint8) for _ in range(3)]
    batches = [np.stack(images[:1]), np.stack(images)]  # two batch sizes: the batch is dynamic
    ok = True
    for r in check(model, out, batches):
        ok &= r["same_count"] and r["same_labels"] and r["max_box_diff"] <= args.tolerance
        masks = ""
        if "max_mask_diff" in r:  # Mask R-CNN
            ok &= r["max_mask_diff"] <= args.mask_tolerance
            masks = f", max mask difference {r['max_mask_diff']:.2e}"
            masks += f" ({r['shifted_masks']} masks a pixel apart)" if r["shifted_masks"] else ""
        print(
            f"batch {r['batch']}: {r['detections']} detections, same count {r['same_count']}, "
            f"same labels {r['same_labels']}, max box difference {r['max_box_diff']:.2e} px" + masks
        )
    if not ok:
        print(f"FAILED: onnxruntime and PyTorch disagree (tolerance {args.tolerance} px)")
        return 1
    outputs = "masks (N, D, H, W) probabilities; " if model.roi_heads.has_mask() else ""
    print(
        f"wrote {out} (input: images float32 (N, 3, {size[0]}, {size[1]}) pixels 0-255, RGB; "
        f"{outputs}class names in the model's metadata)"
    )
    return 0


DETECTION = Command(
    "ONNX with a dynamic batch (input size fixed at export; masks for Mask R-CNN)",
    _detection_arguments,
    export_detection,
    description="Export to ONNX with a dynamic batch dimension (input size fixed at export) and "
    "check it against PyTorch with onnxruntime.",
)


# -- face embeddings ---------------------------------------------------------------------------
def _face_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, tolerance=1e-4, what="|onnx - torch| embedding difference")


def export_face(args: argparse.Namespace) -> int:
    from resvision.tasks.face.export import check, export
    from resvision.tasks.face.model import load_model

    out = output_path(args)
    model, cfg, _ = load_model(args.checkpoint, device="cpu")
    size = cfg.data.image_size
    out = export(model, out, size=size, opset=args.opset)
    worst = 0.0
    for r in check(model, out, size=size):
        worst = max(worst, r["max_abs_diff"])
        print(f"batch {r['batch']}: max |onnx - torch| {r['max_abs_diff']:.2e}")
    if worst > args.tolerance:
        print(f"FAILED: difference {worst:.2e} above --tolerance {args.tolerance:g}")
        return 1
    print(f"wrote {out} (input: images float32 (N, 3, {size}, {size}) pixels 0-255 RGB, aligned)")
    return 0


FACE = Command(
    "ONNX embedding model with a dynamic batch",
    _face_arguments,
    export_face,
    description="Export the embedding model to ONNX with a dynamic batch dimension, checked "
    "against PyTorch with onnxruntime.",
)


# -- face detection ----------------------------------------------------------------------------
def _face_detection_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, tolerance=1e-2, what="box or landmark difference in pixels")
    p.add_argument(
        "--check-images",
        nargs="*",
        default=[],
        help="photos to check on, one at a time at their own size (default: random images)",
    )


def export_face_detection(args: argparse.Namespace) -> int:
    import numpy as np

    from resvision.datasets.images import read_rgb
    from resvision.datasets.inputs import expand_inputs
    from resvision.tasks.face_detection.export import CONTRACT, check
    from resvision.tasks.face_detection.export import export as export_model
    from resvision.tasks.face_detection.model import load_model

    out = output_path(args)
    model, _, _ = load_model(args.checkpoint, device="cpu")
    out = export_model(model, out, opset=args.opset)
    if args.check_images:
        batches = [
            read_rgb(f.path).transpose(2, 0, 1)[None].astype(np.float32)
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


FACE_DETECTION = Command(
    "ONNX with dynamic batch, height and width",
    _face_detection_arguments,
    export_face_detection,
    description="Export the face detector (decoding and NMS included) to ONNX with dynamic "
    "batch, height and width, checked against PyTorch with onnxruntime.",
)
