"""``resvision predict TASK INPUTS --checkpoint RUN --out DIR``: run a trained model on images and
write what it finds (label PNGs and overlays, drawn boxes and COCO results, embeddings).

Every command here follows the same rules (:mod:`.outputs`): inputs are files, folders
(searched recursively) or glob patterns; every input gets its own outputs, under its relative
path; outputs never go into an input folder and never replace an existing file without
``--overwrite``; an unreadable image is skipped with a warning that names it and the rest is
written (``--strict`` stops at the first one instead).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .outputs import (
    BatchReport,
    InputImage,
    check_outputs,
    collect_inputs,
    input_folders,
    output_stems,
    plural,
    progress,
)
from .tasks import Command


def add_common_arguments(
    p: argparse.ArgumentParser,
    *,
    batch_size: int,
    out_help: str = "output folder",
    out_required: bool = True,
) -> None:
    p.add_argument("inputs", nargs="+", help="image files, folders (recursive) or glob patterns")
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a run folder (its best.pt, else last.pt) or a checkpoint file",
    )
    p.add_argument("--out", required=out_required, help=out_help)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=batch_size, help="images per forward pass")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    p.add_argument(
        "--strict", action="store_true", help="stop at the first unreadable image (exit 1)"
    )
    p.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides of the checkpoint's run, e.g. model.roi_heads.score_thresh=0.1",
    )


def read_images(images: list[InputImage], report: BatchReport, desc: str):
    """``(input, RGB array)`` of each readable image, with progress; unreadable ones skipped."""
    from resvision.datasets.images import ImageReadError, read_rgb

    for item in progress(images, total=len(images), desc=desc):
        try:
            yield item, read_rgb(item.path)
        except ImageReadError as e:
            report.skip(item.name, e)


def _batched(pairs, size: int):
    batch = []
    for pair in pairs:
        batch.append(pair)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# -- segmentation ------------------------------------------------------------------------------
def _segmentation_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, batch_size=1)
    p.add_argument(
        "--mode",
        choices=("whole", "slide"),
        default=None,
        help="inference mode (default: the run's)",
    )
    p.add_argument(
        "--tta", action="store_true", help="flip + scales 0.75/1.0/1.25 (averaged probabilities)"
    )


def predict_segmentation(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from resvision.datasets.segmentation import voc_palette
    from resvision.tasks.segmentation.inference import Segmenter
    from resvision.tasks.segmentation.visualize import (
        add_legend,
        overlay,
        overlay_palette,
        save_label_png,
    )

    images = collect_inputs(args.inputs)
    stems = output_stems(images)
    out = Path(args.out)
    outputs = {
        i.path: (out / f"{stems[i.path]}.png", out / f"{stems[i.path]}_overlay.jpg") for i in images
    }
    check_outputs(
        [p for pair in outputs.values() for p in pair],
        inputs=[i.path for i in images],
        input_folders=input_folders(args.inputs),
        overwrite=args.overwrite,
    )
    overrides = list(args.set)
    if args.mode:
        overrides.append(f"inference.mode={args.mode}")
    if args.tta:
        overrides += ["inference.flip=true", "inference.scales=[0.75,1.0,1.25]"]
    seg = Segmenter.from_checkpoint(args.checkpoint, device=args.device, overrides=overrides)
    labels_palette, colours = voc_palette(), overlay_palette(len(seg.class_names))
    counts = np.zeros(len(seg.class_names), np.int64)
    report = BatchReport(strict=args.strict)
    t0 = time.perf_counter()
    windows = lambda chunks, total: progress(chunks, total=total, desc="windows")  # noqa: E731
    for batch in _batched(read_images(images, report, "images"), args.batch_size):
        found = seg.predict([rgb for _, rgb in batch], batch_size=args.batch_size, progress=windows)
        for (item, rgb), labels in zip(batch, found):
            counts += np.bincount(labels.reshape(-1), minlength=len(counts))[: len(counts)]
            label_path, overlay_path = outputs[item.path]
            label_path.parent.mkdir(parents=True, exist_ok=True)
            save_label_png(labels, label_path, labels_palette)
            picture = add_legend(overlay(rgb, labels, colours), labels, seg.class_names, colours)
            cv2.imwrite(str(overlay_path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
            report.done += 1
    print(f"{report.summary()} in {time.perf_counter() - t0:.1f} s -> {out}")
    if report.done:
        share = counts / max(counts.sum(), 1)
        shown = ", ".join(f"{n} {100 * s:.1f}%" for n, s in zip(seg.class_names, share) if s > 0)
        print(f"pixel share: {shown}")
    return report.exit_code()


SEGMENTATION = Command(
    "label PNGs (pixel = class index) and colour overlays",
    _segmentation_arguments,
    predict_segmentation,
    description="Write a palette label PNG (pixel = class index) and a colour overlay with a "
    "legend for every image, under the image's relative path in --out.",
)


# -- detection ---------------------------------------------------------------------------------
def _detection_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, batch_size=4)
    p.add_argument(
        "--score-threshold",
        type=float,
        default=0.3,
        help="lowest score drawn (the json files keep every detection)",
    )
    p.add_argument("--tta", action="store_true", help="flip + several scales, merged by NMS")


def predict_detection(args: argparse.Namespace) -> int:
    import cv2

    from resvision.tasks.detection.inference import Detector
    from resvision.tasks.detection.visualize import class_colours, draw_detections

    images = collect_inputs(args.inputs)
    stems = output_stems(images)
    out = Path(args.out)
    drawn_paths = {i.path: out / f"{stems[i.path]}.jpg" for i in images}
    files = [out / "detections.json", out / "coco_results.json", out / "coco_images.json"]
    check_outputs(
        [*drawn_paths.values(), *files],
        inputs=[i.path for i in images],
        input_folders=input_folders(args.inputs),
        overwrite=args.overwrite,
    )
    det = Detector.from_checkpoint(args.checkpoint, device=args.device, overrides=args.set)
    category_ids = det.category_ids
    colours = class_colours(len(det.class_names))
    readable, results, pictures = [], [], []
    report = BatchReport(strict=args.strict)
    t0, count = time.perf_counter(), 0
    for batch in _batched(read_images(images, report, "images"), args.batch_size):
        found = det.predict([rgb for _, rgb in batch], batch_size=args.batch_size, tta=args.tta)
        for (item, rgb), r in zip(batch, found):
            image_id = len(pictures) + 1
            pictures.append(
                {
                    "id": image_id,
                    "file_name": item.name,
                    "height": rgb.shape[0],
                    "width": rgb.shape[1],
                }
            )
            for box, score, label, name in zip(
                r["boxes"], r["scores"], r["labels"], r["class_names"]
            ):
                x1, y1, x2, y2 = (float(v) for v in box)
                xywh = [round(v, 2) for v in (x1, y1, x2 - x1, y2 - y1)]
                readable.append(
                    {
                        "file_name": item.name,
                        "category": str(name),
                        "category_id": int(label),
                        "bbox": xywh,
                        "score": round(float(score), 5),
                    }
                )
                results.append(
                    {
                        "image_id": image_id,
                        "category_id": int(category_ids[label - 1]),
                        "bbox": xywh,
                        "score": round(float(score), 5),
                    }
                )
            shown = r["scores"] >= args.score_threshold
            count += int(shown.sum())
            drawn = draw_detections(
                rgb,
                r["boxes"][shown],
                r["scores"][shown],
                r["class_names"][shown],
                colours[r["labels"][shown]],
            )
            drawn_paths[item.path].parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(drawn_paths[item.path]), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
            report.done += 1
    categories = [{"id": int(c), "name": n} for c, n in zip(category_ids, det.class_names)]
    (out / "detections.json").write_text(json.dumps(readable, indent=1))
    (out / "coco_results.json").write_text(json.dumps(results))
    (out / "coco_images.json").write_text(
        json.dumps({"images": pictures, "categories": categories}, indent=1)
    )
    took = time.perf_counter() - t0
    print(
        f"{report.summary()}, {plural(count, 'detection')} with score >= "
        f"{args.score_threshold} in {took:.1f} s -> {out} (drawn images, detections.json, "
        "COCO results coco_results.json with its image list coco_images.json)"
    )
    return report.exit_code()


DETECTION = Command(
    "drawn boxes, a readable json and a COCO results file",
    _detection_arguments,
    predict_detection,
    description="Detect objects; write every image with its boxes drawn (under its relative "
    "path), detections.json (file name, class, box xywh, score), and a COCO results file "
    "coco_results.json whose image ids coco_images.json maps to the relative paths.",
)


# -- face embeddings ---------------------------------------------------------------------------
def _face_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(
        p, batch_size=64, out_help="output .npz (or give --gallery)", out_required=False
    )
    p.add_argument(
        "--gallery",
        default=None,
        help="add the faces to this gallery instead of writing an .npz (a folder, created when "
        "missing, or milvus://HOST:PORT/COLLECTION), in one atomic update; photos already in "
        "it are skipped",
    )
    p.add_argument("--no-flip", action="store_true", help="no flip test-time augmentation")
    p.add_argument(
        "--landmarks",
        default=None,
        help="JSON/CSV of 5-point landmarks per image, keyed by relative name: align with "
        "norm_crop",
    )
    p.add_argument(
        "--detector",
        default=None,
        help="a face-detection run folder or checkpoint (or Pytorch_Retinaface's "
        "Resnet50_Final.pth): find every face in each photo, align it from its landmarks and "
        "embed it; the .npz then keeps photo, box, score and landmarks per face",
    )
    p.add_argument(
        "--score-threshold", type=float, default=0.5, help="with --detector: lowest face score"
    )
    p.add_argument(
        "--min-face-size",
        type=float,
        default=0.0,
        help="with --detector: leave out faces whose box is smaller (shorter side, pixels)",
    )
    p.add_argument(
        "--largest-face-only",
        action="store_true",
        help="with --detector: only the largest face of each photo",
    )


def _face_output(args: argparse.Namespace, images) -> tuple[list, list]:
    """Check ``--out`` or ``--gallery`` before any work: ``(images to read, images already in
    the gallery)``."""
    from . import gallery_cmd

    if bool(args.out) == bool(args.gallery):
        raise ValueError("give --out FILE.npz or --gallery GALLERY (one of them)")
    if args.gallery:
        return gallery_cmd.new_images(args.gallery, images)
    out = Path(args.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out {args.out!r}: the embeddings are written as an .npz file")
    check_outputs([out], inputs=[i.path for i in images], overwrite=args.overwrite)
    return images, []


def _source(emb, args: argparse.Namespace, alignment: str):
    from resvision.tasks.face.gallery import EmbeddingSource

    return EmbeddingSource(emb.fingerprint, alignment, not args.no_flip)


def embed_faces(args: argparse.Namespace) -> int:
    if getattr(args, "detector", None):
        return embed_detected_faces(args)
    import numpy as np

    from resvision.datasets.face import read_landmarks
    from resvision.tasks.face.inference import Embedder

    images, known = _face_output(args, collect_inputs(args.inputs))
    table = read_landmarks(args.landmarks) if args.landmarks else None
    if table is not None:
        missing = [i.name for i in images if i.name not in table]
        if missing:
            raise ValueError(
                f"{plural(len(missing), 'image')} have no landmarks in {args.landmarks}, e.g. "
                f"{missing[:3]}"
            )
    emb = Embedder.from_checkpoint(args.checkpoint, device=args.device, overrides=args.set)
    source = _source(emb, args, "norm_crop" if table is not None else "none")
    report = BatchReport(strict=args.strict)
    t0 = time.perf_counter()

    def batches():
        for batch in _batched(read_images(images, report, "images"), args.batch_size):
            marks = [table[item.name] for item, _ in batch] if table is not None else None
            found = emb.embed([rgb for _, rgb in batch], landmarks=marks, flip=not args.no_flip)
            report.done += len(batch)
            yield [item for item, _ in batch], found

    if args.gallery:
        from .gallery_cmd import crop_rows, embed_into_gallery

        rows = (crop_rows(items, found) for items, found in batches())
        size = emb.model.embedding_size
        added, total = embed_into_gallery(args.gallery, rows, source=source, dim=size)
        skipped = f" ({plural(len(known), 'image')} already there skipped)" if known else ""
        print(f"{report.summary()}{skipped} -> {args.gallery}: {added} added, now {total:,} faces")
        return report.exit_code()
    names, vectors = [], []
    for items, found in batches():
        vectors.append(found)
        names += [item.name for item in items]
    out = Path(args.out)
    if report.done:
        np.savez(
            out,
            embeddings=np.concatenate(vectors),
            names=np.array(names),
            source=np.array(source.to_json()),
        )
        rate = report.done / (time.perf_counter() - t0)
        print(f"{report.summary()} -> {out} ({vectors[0].shape[1]}-d, {rate:.1f} images/s)")
    else:
        print(f"{report.summary()}: nothing written")
    return report.exit_code()


def embed_detected_faces(args: argparse.Namespace) -> int:
    """``face embed PHOTOS --detector RUN``: every face of every photo, aligned and embedded."""
    import numpy as np

    from resvision.tasks.face.inference import Embedder
    from resvision.tasks.face_detection.inference import FaceDetector
    from resvision.tasks.pipelines.face import FaceGallery, FacePipeline

    if args.landmarks:
        raise ValueError("--landmarks and --detector exclude each other: the detector finds them")
    images, known = _face_output(args, collect_inputs(args.inputs))
    pipeline = FacePipeline(
        FaceDetector.from_checkpoint(args.detector, device=args.device),
        Embedder.from_checkpoint(args.checkpoint, device=args.device, overrides=args.set),
        score_threshold=args.score_threshold,
        min_face_size=args.min_face_size,
        largest_face_only=args.largest_face_only,
        flip=not args.no_flip,
    )
    size = pipeline.embedder.model.embedding_size
    source = _source(pipeline.embedder, args, "norm_crop")
    report = BatchReport(strict=args.strict)
    counts = {"faces": 0, "without": 0, "unaligned": 0, "small": 0}
    t0 = time.perf_counter()
    per_pass = max(1, min(args.batch_size, 8))  # photos per detector pass

    def batches():
        """The faces of each batch of photos: (photo name, file, k, PhotoFaces) rows, and the
        photos without a face."""
        for batch in _batched(read_images(images, report, "photos"), per_pass):
            found = pipeline([rgb for _, rgb in batch], names=[item.name for item, _ in batch])
            for r in found:
                counts["unaligned"] += len(r.skipped)
                counts["small"] += r.below_min_size
                counts["without"] += not len(r.scores)
                counts["faces"] += len(r.scores)
                report.done += 1
            yield [(item, r) for (item, _), r in zip(batch, found)]

    def notes() -> str:
        out = [f"{plural(counts['without'], 'photo')} without a face"]
        if counts["unaligned"]:
            out.append(f"{plural(counts['unaligned'], 'face')} too small to align skipped")
        if counts["small"]:
            out.append(
                f"{plural(counts['small'], 'face')} below --min-face-size {args.min_face_size:g}"
            )
        if known:
            out.append(f"{plural(len(known), 'photo')} already in the gallery skipped")
        return ", ".join(out)

    if args.gallery:
        from .gallery_cmd import embed_into_gallery, photo_rows

        rows = (photo_rows(batch, size) for batch in batches())
        added, total = embed_into_gallery(args.gallery, rows, source=source, dim=size)
        took = time.perf_counter() - t0
        print(
            f"{report.summary()}: {plural(added, 'face')} ({notes()}) in {took:.1f} s -> "
            f"{args.gallery} (now {total:,} faces)"
        )
        return report.exit_code()
    rows: dict[str, list] = {k: [] for k in ("photos", "paths", "index", "found")}
    without = []
    for batch in batches():
        for item, r in batch:
            if not len(r.scores):
                without.append(item.name)
            rows["photos"] += [item.name] * len(r.scores)
            rows["paths"] += [str(item.path.resolve())] * len(r.scores)
            rows["index"] += list(range(len(r.scores)))
            rows["found"].append(r)
    if not report.done:
        print(f"{report.summary()}: nothing written")
        return report.exit_code()
    parts = rows["found"]
    gallery = FaceGallery(
        photos=np.array(rows["photos"], dtype=str),
        paths=np.array(rows["paths"], dtype=str),
        face_index=np.array(rows["index"], np.int64),
        boxes=np.concatenate([r.boxes for r in parts]).astype(np.float32).reshape(-1, 4),
        scores=np.concatenate([r.scores for r in parts]).astype(np.float32),
        landmarks=np.concatenate([r.landmarks for r in parts]).astype(np.float32).reshape(-1, 5, 2),
        embeddings=np.concatenate([r.embeddings for r in parts]).reshape(-1, size),
        photos_without_faces=np.array(without, dtype=str),
        source=source.to_json(),
    )
    out = Path(args.out)
    gallery.save(out)
    took = time.perf_counter() - t0
    print(
        f"{report.summary()}: {plural(len(gallery), 'face')} ({notes()}) in {took:.1f} s "
        f"-> {out} ({size}-d embeddings with photo, box, score and landmarks per face)"
    )
    return report.exit_code()


FACE = Command(
    "embed face images into an .npz or a gallery (the same as `resvision face embed`)",
    _face_arguments,
    embed_faces,
    description="Embed face images (files, folders, globs) into an .npz: embeddings (N, D) "
    "float32 unit length, names (relative paths). With --detector, photos instead: every face "
    "is found, aligned from its five landmarks and embedded; the .npz (a gallery) keeps per "
    "face its photo, box, score, landmarks and embedding (names are photo#k). With --gallery "
    "instead of --out, the faces are added to a gallery in one atomic update (photos already "
    "there skipped).",
)
