"""``resvision predict TASK INPUTS --checkpoint RUN --out DIR``: run a trained model on images and
write what it finds (label PNGs and overlays, drawn boxes and COCO results, embeddings).

Every command here follows the same rules (:mod:`.outputs`): inputs are files, folders
(searched recursively) or glob patterns; every input gets its own outputs, under its relative
path; outputs never go into an input folder and never replace an existing file without
``--overwrite``; an unreadable image is skipped with a warning that names it and the rest is
written (``--strict`` stops at the first one instead).

They all run on the engine's bulk path (:mod:`resvision.tasks.engine.bulk`): images are decoded
in ``--workers`` processes, per-image outputs are written as each batch finishes and the
aggregated files (COCO results, ``faces.json``, embeddings) are assembled at the end from parts
kept on disk, so ``--resume`` continues a killed run and ``torchrun --nproc-per-node N -m
resvision.tools predict ...`` shares the images among N processes.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resvision.datasets.inputs import InputImage, expand_inputs

from .outputs import check_outputs, input_folders, output_stems, plural
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
    add_bulk_arguments(p)
    p.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides of the checkpoint's run, e.g. model.roi_heads.score_thresh=0.1",
    )


def add_bulk_arguments(p: argparse.ArgumentParser) -> None:
    """``--workers``, ``--resume``, ``--overwrite`` and ``--strict``: what every command on the
    bulk path takes."""
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes decoding images (0: in the main process; default: half the cores, "
        "at most 8, shared by the processes of a torchrun launch)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue a run of this command that was stopped or killed (same inputs, model "
        "and options): images already done are not run again",
    )
    p.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    p.add_argument(
        "--strict", action="store_true", help="stop at the first unreadable image (exit 1)"
    )


# -- the output rules of a bulk command ---------------------------------------------------------
def parts_folder(out: Path, *, file: bool = False) -> Path:
    """Where a run keeps its parts until it is assembled: ``OUT/.resvision-parts`` for an output
    folder, ``FILE.parts`` beside an output file."""
    return out.with_name(out.name + ".parts") if file else out / ".resvision-parts"


def check_bulk_outputs(
    args: argparse.Namespace,
    count: int,
    outputs: list[Path],
    parts: Path | None,
    *,
    inputs: list[Path],
    input_folders: list[Path],
) -> None:
    """The output rules with ``--resume``: an unfinished run (of ``count`` inputs, its parts in
    ``parts``; None: a run without parts) is continued only with ``--resume`` (its own outputs
    may then exist), never mixed into silently. Every rank of a torchrun launch checks (so
    every rank stops on a problem); call it after :func:`bulk_device`."""
    from resvision.tasks.engine import distributed as D
    from resvision.tasks.engine.bulk import unfinished_run

    if args.resume and args.overwrite:
        raise ValueError("--resume continues a run and --overwrite starts it again: give one")
    unfinished = unfinished_run(parts, count) if parts is not None else None
    if unfinished and not (args.resume or args.overwrite):
        raise FileExistsError(unfinished)
    check_outputs(
        outputs,
        inputs=inputs,
        input_folders=input_folders,
        overwrite=args.overwrite or bool(unfinished and args.resume),
    )
    D.barrier()  # under torchrun: every rank has checked before rank 0 creates the parts


def bulk_device(args: argparse.Namespace):
    """This process's device, after joining a torchrun launch (CUDA: ``cuda:LOCAL_RANK``)."""
    from resvision.tasks.engine.bulk import init_bulk_distributed
    from resvision.tasks.engine.runtime import resolve_device

    dist = init_bulk_distributed(resolve_device(args.device).type)  # checks --device first
    return resolve_device(args.device, dist)


@dataclass
class BulkOutputs:
    """A bulk command's inputs, outputs and device, checked (:func:`prepare_outputs`)."""

    images: list[InputImage]
    out: Path
    per_image: list[list[Path]]  # each input's own outputs
    parts: Path
    device: Any


def prepare_outputs(
    args: argparse.Namespace, *, endings: tuple[str, ...] = (), aggregated: tuple[str, ...] = ()
) -> BulkOutputs:
    """Expand the inputs, name their outputs (``--out`` is a folder: each input's stem plus each
    of ``endings``, and the ``aggregated`` files; or an ``.npz`` file when ``endings`` and
    ``aggregated`` are empty), join a torchrun launch and check the output rules."""
    images = expand_inputs(args.inputs)
    out = Path(args.out)
    if endings or aggregated:
        stems = output_stems(images)
        per_image = [[out / f"{stems[i.path]}{e}" for e in endings] for i in images]
        outputs = [p for paths in per_image for p in paths] + [out / f for f in aggregated]
        parts = parts_folder(out)
    else:
        if out.suffix != ".npz":
            raise ValueError(f"--out {args.out!r}: the embeddings are written as an .npz file")
        per_image, outputs, parts = [[] for _ in images], [out], parts_folder(out, file=True)
    device = bulk_device(args)
    check_bulk_outputs(
        args,
        len(images),
        outputs,
        parts,
        inputs=[i.path for i in images],
        input_folders=input_folders(args.inputs),
    )
    return BulkOutputs(images, out, per_image, parts, device)


def depends_on(args: argparse.Namespace, device, **options: Any) -> dict[str, Any]:
    """What a run's outputs depend on (a resume must match it): the model file's sha256, the
    overrides and the command's options."""
    from resvision.tasks.engine.bulk import file_digest
    from resvision.tasks.engine.checkpoint import resolve_checkpoint

    model = resolve_checkpoint(args.checkpoint)
    return {
        "checkpoint": file_digest(model),
        "set": list(args.set),
        "device": device.type,
        "batch_size": args.batch_size,
        **options,
    }


def run_bulk_command(args: argparse.Namespace, job, run: BulkOutputs, **options):
    """Run ``job`` on the bulk path; a stop by SIGTERM/SIGINT prints how to resume."""
    from resvision.tasks.engine.bulk import BulkStopped, run_bulk

    try:
        result = run_bulk(
            job,
            run.images,
            run.parts,
            batch_size=options.pop("batch_size", args.batch_size),
            workers=args.workers,
            resume=args.resume,
            overwrite=args.overwrite,
            strict=args.strict,
            device=run.device,
            **options,
        )
    except BulkStopped as e:
        print(
            f"{e}: {plural(e.done, 'image')} of {len(run.images)} done; continue with the same "
            "command and --resume",
            file=sys.stderr,
        )
        raise SystemExit(143 if e.signal_name == "SIGTERM" else 130) from None
    return result


def summary(result) -> str:
    text = plural(result.images, "image")
    if result.skipped:
        text += f", {plural(len(result.skipped), 'unreadable input')} skipped"
    if result.done_before:
        text += f" ({result.done_before} done before this resume)"
    return text


def exit_code(result) -> int:
    """0 when something was written; 1 when every input was unreadable."""
    return 0 if result.images or not result.skipped else 1


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
    from resvision.tasks.segmentation.bulk import SegmentationBulk
    from resvision.tasks.segmentation.inference import Segmenter

    from .outputs import progress

    run = prepare_outputs(args, endings=(".png", "_overlay.jpg"))
    overrides = list(args.set)
    if args.mode:
        overrides.append(f"inference.mode={args.mode}")
    if args.tta:
        overrides += ["inference.flip=true", "inference.scales=[0.75,1.0,1.25]"]
    seg = Segmenter.from_checkpoint(args.checkpoint, device=str(run.device), overrides=overrides)
    windows = lambda chunks, total: progress(chunks, total=total, desc="windows")  # noqa: E731
    job = SegmentationBulk(
        seg,
        run.per_image,
        progress=windows,
        depends_on=depends_on(args, run.device, task="segmentation", mode=args.mode, tta=args.tta),
    )
    result = run_bulk_command(args, job, run)
    if result is None:
        return 0
    print(f"{summary(result)} in {result.seconds:.1f} s -> {run.out}")
    share = result.report["pixel_share"]
    if result.images:
        shown = ", ".join(f"{n} {100 * s:.1f}%" for n, s in zip(seg.class_names, share) if s > 0)
        print(f"pixel share: {shown}")
    return exit_code(result)


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
    from resvision.tasks.detection.bulk import OUTPUT_FILES, DetectionBulk
    from resvision.tasks.detection.inference import Detector

    run = prepare_outputs(args, endings=(".jpg",), aggregated=OUTPUT_FILES)
    det = Detector.from_checkpoint(args.checkpoint, device=str(run.device), overrides=args.set)
    job = DetectionBulk(
        det,
        run.out,
        [paths[0] for paths in run.per_image],
        score_threshold=args.score_threshold,
        tta=args.tta,
        depends_on=depends_on(
            args, run.device, task="detection", score_threshold=args.score_threshold, tta=args.tta
        ),
    )
    result = run_bulk_command(args, job, run)
    if result is None:
        return 0
    print(
        f"{summary(result)}, {plural(result.report['drawn'], 'detection')} with score >= "
        f"{args.score_threshold} in {result.seconds:.1f} s -> {run.out} (drawn images, "
        "detections.json, COCO results coco_results.json with its image list coco_images.json)"
    )
    return exit_code(result)


DETECTION = Command(
    "drawn boxes (and masks), a readable json and a COCO results file",
    _detection_arguments,
    predict_detection,
    description="Detect objects; write every image with its boxes (and a Mask R-CNN's masks, "
    "filled in the class colours) drawn (under its relative path), detections.json (file "
    "name, class, box xywh, score), and a COCO results file coco_results.json (with RLE "
    "segmentations for masks) whose image ids coco_images.json maps to the relative paths.",
)


# -- face detection ----------------------------------------------------------------------------
def _face_detection_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, batch_size=4)
    p.add_argument(
        "--score-threshold",
        type=float,
        default=0.5,
        help="lowest face score drawn and written to faces.json",
    )


def predict_face_detection(args: argparse.Namespace) -> int:
    from resvision.tasks.face_detection.bulk import FaceDetectionBulk
    from resvision.tasks.face_detection.inference import FaceDetector

    run = prepare_outputs(args, endings=(".jpg",), aggregated=("faces.json",))
    det = FaceDetector.from_checkpoint(args.checkpoint, device=str(run.device), overrides=args.set)
    job = FaceDetectionBulk(
        det,
        run.out,
        [paths[0] for paths in run.per_image],
        score_threshold=args.score_threshold,
        depends_on=depends_on(
            args, run.device, task="face-detection", score_threshold=args.score_threshold
        ),
    )
    result = run_bulk_command(args, job, run)
    if result is None:
        return 0
    print(
        f"{summary(result)}, {plural(result.report['faces'], 'face')} with score >= "
        f"{args.score_threshold} in {result.seconds:.1f} s -> {run.out} (drawn images, faces.json: "
        "box xyxy, score and five landmarks per face)"
    )
    return exit_code(result)


FACE_DETECTION = Command(
    "drawn faces (boxes, five landmarks) and a json",
    _face_detection_arguments,
    predict_face_detection,
    description="Detect faces with their five landmarks; write every image with its faces "
    "drawn (under its relative path) and faces.json (per image: box xyxy, score, landmarks: "
    "left eye, right eye, nose tip, left and right mouth corner).",
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
        "missing, or milvus://HOST:PORT/COLLECTION), in one atomic update at the end; photos "
        "already in it are skipped; --resume continues a killed run",
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


def embed_faces(args: argparse.Namespace) -> int:
    if getattr(args, "detector", None):
        return embed_detected_faces(args)
    import numpy as np

    from resvision.datasets.face import read_landmarks
    from resvision.tasks.engine.bulk import file_digest
    from resvision.tasks.face.bulk import EmbeddingsBulk
    from resvision.tasks.face.gallery import EmbeddingSource
    from resvision.tasks.face.gallery.writer import GalleryOutput
    from resvision.tasks.face.inference import Embedder

    run = _face_outputs(args)
    emb = Embedder.from_checkpoint(args.checkpoint, device=str(run.device), overrides=args.set)
    alignment = "norm_crop" if args.landmarks else "none"
    source = EmbeddingSource(emb.fingerprint, alignment, not args.no_flip)
    known = _skip_known(args, run, source, emb.model.embedding_size)
    if known is None:
        return 0
    images, extras = run.images, None
    if args.landmarks:
        table = read_landmarks(args.landmarks)
        missing = [i.name for i in images if i.name not in table]
        if missing:
            raise ValueError(
                f"{plural(len(missing), 'image')} have no landmarks in {args.landmarks}, e.g. "
                f"{missing[:3]}"
            )
        extras = np.stack([np.asarray(table[i.name], np.float32).reshape(5, 2) for i in images])
    job = EmbeddingsBulk(
        emb,
        GalleryOutput(args.gallery, source) if args.gallery else run.out,
        source=source,
        flip=not args.no_flip,
        depends_on=depends_on(
            args,
            run.device,
            task="face",
            flip=not args.no_flip,
            landmarks=file_digest(args.landmarks) if args.landmarks else None,
        ),
    )
    result = run_bulk_command(args, job, run, extras=extras)
    if result is None:
        return 0
    if args.gallery:
        added = plural(result.images, "face") if result.report["written"] else "nothing"
        print(
            f"{summary(result)}{_known(known, 'image')} -> {args.gallery}: {added} added, now "
            f"{result.report['gallery_size']:,} faces"
        )
    elif result.report["written"]:
        rate = result.images / max(result.seconds, 1e-9)
        dimension = result.report["dimension"]
        print(f"{summary(result)} -> {run.out} ({dimension}-d, {rate:.1f} images/s)")
    else:
        print(f"{summary(result)}: nothing written")
    return exit_code(result)


def embed_detected_faces(args: argparse.Namespace) -> int:
    """``face embed PHOTOS --detector RUN``: every face of every photo, aligned and embedded."""
    from resvision.tasks.engine.bulk import file_digest
    from resvision.tasks.engine.checkpoint import resolve_checkpoint
    from resvision.tasks.face.gallery import EmbeddingSource
    from resvision.tasks.face.gallery.writer import GalleryOutput
    from resvision.tasks.face.inference import Embedder
    from resvision.tasks.face_detection.inference import FaceDetector
    from resvision.tasks.pipelines.face import FaceGalleryBulk, FacePipeline

    if args.landmarks:
        raise ValueError("--landmarks and --detector exclude each other: the detector finds them")
    run = _face_outputs(args)
    device = str(run.device)
    pipeline = FacePipeline(
        FaceDetector.from_checkpoint(args.detector, device=device),
        Embedder.from_checkpoint(args.checkpoint, device=device, overrides=args.set),
        score_threshold=args.score_threshold,
        min_face_size=args.min_face_size,
        largest_face_only=args.largest_face_only,
        flip=not args.no_flip,
    )
    source = EmbeddingSource(pipeline.embedder.fingerprint, "norm_crop", not args.no_flip)
    known = _skip_known(args, run, source, pipeline.embedder.model.embedding_size)
    if known is None:
        return 0
    per_pass = max(1, min(args.batch_size, 8))  # photos per detector pass
    job = FaceGalleryBulk(
        pipeline,
        GalleryOutput(args.gallery, source) if args.gallery else run.out,
        source=source,
        depends_on=depends_on(
            args,
            run.device,
            task="face+face-detection",
            detector=file_digest(resolve_checkpoint(args.detector)),
            flip=not args.no_flip,
            score_threshold=args.score_threshold,
            min_face_size=args.min_face_size,
            largest_face_only=args.largest_face_only,
        ),
    )
    result = run_bulk_command(args, job, run, batch_size=per_pass)
    if result is None:
        return 0
    r = result.report
    if not r["photos"] and not args.gallery:
        print(f"{summary(result)}: nothing written")
        return exit_code(result)
    notes = [f"{plural(r['without_faces'], 'photo')} without a face"]
    if r["unaligned"]:
        notes.append(f"{plural(r['unaligned'], 'face')} too small to align skipped")
    if r["below_min_size"]:
        notes.append(
            f"{plural(r['below_min_size'], 'face')} below --min-face-size {args.min_face_size:g}"
        )
    if args.gallery:
        print(
            f"{summary(result)}: {plural(r['faces'], 'face')} ({', '.join(notes)}"
            f"{_known(known, 'photo')}) in {result.seconds:.1f} s -> {args.gallery} (now "
            f"{r['gallery_size']:,} faces)"
        )
        return exit_code(result)
    print(
        f"{summary(result)}: {plural(r['faces'], 'face')} ({', '.join(notes)}) in "
        f"{result.seconds:.1f} s -> {run.out} ({r['dimension']}-d embeddings with photo, box, "
        "score and landmarks per face)"
    )
    return exit_code(result)


def _face_outputs(args: argparse.Namespace) -> BulkOutputs:
    """``face embed``'s outputs checked: the ``--out`` .npz, or the ``--gallery``."""
    if bool(args.out) == bool(args.gallery):
        raise ValueError("give --out FILE.npz or --gallery GALLERY (one of them)")
    return _gallery_outputs(args) if args.gallery else prepare_outputs(args)


def _gallery_outputs(args: argparse.Namespace) -> BulkOutputs:
    """``face embed --gallery``'s outputs: the inputs expanded, a gallery folder refused inside
    an input folder, the run's parts (:func:`.gallery_cmd.gallery_parts`) checked."""
    from resvision.tasks.face.gallery.writer import not_npz

    from .gallery_cmd import gallery_parts

    not_npz(args.gallery)
    images = expand_inputs(args.inputs)
    inputs, folders = [i.path for i in images], input_folders(args.inputs)
    if not args.gallery.startswith("milvus:"):  # never into an input folder
        check_outputs([Path(args.gallery)], inputs=inputs, input_folders=folders, overwrite=True)
    parts = gallery_parts(args.gallery)
    device = bulk_device(args)
    check_bulk_outputs(args, len(images), [], parts, inputs=inputs, input_folders=folders)
    return BulkOutputs(images, Path(args.gallery), [[] for _ in images], parts, device)


def _skip_known(args: argparse.Namespace, run: BulkOutputs, source, dim: int) -> list | None:
    """With ``--gallery``: the photos already in it (left out of ``run.images``), after
    refusing a gallery of another model; None when nothing is left to do (printed)."""
    if not args.gallery:
        return []
    from .gallery_cmd import skip_known

    return skip_known(args, run, source, dim)


def _known(known: list, what: str) -> str:
    return f", {plural(len(known), what)} already in the gallery skipped" if known else ""


FACE = Command(
    "embed face images into an .npz or a gallery (the same as `resvision face embed`)",
    _face_arguments,
    embed_faces,
    description="Embed face images (files, folders, globs) into an .npz: embeddings (N, D) "
    "float32 unit length, names (relative paths). With --detector, photos instead: every face "
    "is found, aligned from its five landmarks and embedded; the .npz (a gallery) keeps per "
    "face its photo, box, score, landmarks and embedding (names are photo#k). With --gallery "
    "instead of --out, the faces are added to a gallery in one atomic update (photos already "
    "there skipped; --resume continues a killed run).",
)
