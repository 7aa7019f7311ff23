"""``resvision face embed|search|verify|cluster|convert``: the face-embedding pipeline."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from . import predict
from .outputs import BatchReport, check_outputs, ensure_writable, plural
from .tasks import Command


def load_embeddings(path: str):
    """``(embeddings (N, D) float32, names (N,))`` of an .npz written by ``face embed``."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"embedding file {path!r} does not exist (write one with `resvision face embed`)"
        )
    not_embeddings = ValueError(
        f"{path!r} is not an embedding file: give an .npz written by `resvision face embed` "
        "(arrays 'embeddings' and 'names')"
    )
    try:
        data = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError):
        raise not_embeddings from None
    if not hasattr(data, "files") or "embeddings" not in data or "names" not in data:
        raise not_embeddings
    return data["embeddings"].astype(np.float32), data["names"]


def load_gallery(path: str, flag: str):
    """The :class:`FaceGallery` of an .npz written by ``face embed --detector`` (needed to draw
    photos: it knows where each face is)."""
    import numpy as np

    from resvision.tasks.pipelines.face import FaceGallery

    load_embeddings(path)  # the same errors for files that are not embeddings at all
    with np.load(path, allow_pickle=False) as data:
        if "boxes" not in data:
            raise ValueError(
                f"{flag} needs a gallery of photos: {path!r} holds embeddings of face images; "
                "write one with `resvision face embed PHOTOS --detector RUN`"
            )
        return FaceGallery.from_npz(data)


def draw_gallery(gallery, captions: list[str], out: Path, *, overwrite: bool) -> None:
    """Each photo of ``gallery`` with every face boxed and captioned, under ``out`` (the
    photo's relative name, as .jpg); photos that cannot be read any more are skipped."""
    import cv2

    from resvision.datasets.images import ImageReadError, read_rgb
    from resvision.tasks.face_detection.visualize import draw_faces

    photos = dict.fromkeys(str(p) for p in gallery.photos)
    paths = dict(zip(gallery.photos, gallery.paths))
    targets = {p: out / Path(p).with_suffix(".jpg") for p in photos}
    # the folder holding every photo is an input folder: nothing is drawn into it
    root = Path(os.path.commonpath([str(Path(paths[p]).parent) for p in photos]))
    check_outputs(
        targets.values(),
        inputs=[Path(v) for v in paths.values()],
        input_folders=[root] if photos else [],
        overwrite=overwrite,
    )
    report = BatchReport()
    for photo in photos:
        rows = [i for i, p in enumerate(gallery.photos) if p == photo]
        try:
            image = read_rgb(paths[photo])
        except ImageReadError as e:
            report.skip(photo, e)
            continue
        picture = draw_faces(
            image, gallery.boxes[rows], gallery.landmarks[rows], [captions[i] for i in rows]
        )
        targets[photo].parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(targets[photo]), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        report.done += 1
    print(f"drew {report.summary()} with every face labelled -> {out}")


# -- search ------------------------------------------------------------------------------------
def _search_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gallery", required=True, help="the gallery .npz (face embed)")
    p.add_argument("--query", required=True, help="the query .npz (face embed)")
    p.add_argument("--top-k", type=int, default=5, help="results per query")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="cosine above which a result counts as the same person",
    )
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument(
        "--draw",
        default=None,
        metavar="FOLDER",
        help="draw each query photo with every face labelled by its best gallery match (the "
        "query must be a gallery of photos: face embed --detector)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace drawn photos that exist")


def search(args: argparse.Namespace) -> int:
    from resvision.tasks.face.inference import search

    gallery, gnames = load_embeddings(args.gallery)
    query, qnames = load_embeddings(args.query)
    if gallery.shape[1] != query.shape[1]:
        raise ValueError(
            f"gallery embeddings are {gallery.shape[1]}-d, queries {query.shape[1]}-d: use one "
            "model for both"
        )
    scores, idx = search(gallery, query, args.top_k)
    if args.threshold is not None:
        print(f"(* marks a result with cosine >= {args.threshold}: the same person)")
    results = []
    for q, name in enumerate(qnames):
        hits = [
            {"name": str(gnames[j]), "score": float(s)}
            | ({"match": bool(s >= args.threshold)} if args.threshold is not None else {})
            for s, j in zip(scores[q], idx[q])
            if j >= 0
        ]
        results.append({"query": str(name), "results": hits})
        shown = ", ".join(
            f"{h['name']} {h['score']:.3f}{' *' if h.get('match') else ''}" for h in hits
        )
        print(f"{name}: {shown}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.draw:
        labels = _labels(args.gallery)
        captions = []
        for q in range(len(qnames)):
            if idx.shape[1] == 0 or idx[q, 0] < 0:
                captions.append("?")
                continue
            best, score = labels[idx[q, 0]], float(scores[q, 0])
            unknown = args.threshold is not None and score < args.threshold
            captions.append(f"{'unknown' if unknown else best} {score:.2f}")
        draw_gallery(
            load_gallery(args.query, "--draw"), captions, Path(args.draw), overwrite=args.overwrite
        )
    return 0


def _labels(path: str) -> list[str]:
    """Who each gallery face is: its ``labels`` (galleries of photos), else its name."""
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        return [str(v) for v in (data["labels"] if "labels" in data else data["names"])]


# -- verify ------------------------------------------------------------------------------------
def _verify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a face run folder or checkpoint file")
    p.add_argument("--pairs", default=None, help="pairs.txt (with --root)")
    p.add_argument("--root", default=None, help="image root of pairs.txt")
    p.add_argument("--bin", default=None, help="an InsightFace .bin verification set")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")


def verify(args: argparse.Namespace) -> int:
    from resvision.datasets.face import VerificationSet
    from resvision.tasks.face.evaluation import evaluate_embeddings
    from resvision.tasks.face.inference import Embedder

    emb = Embedder.from_checkpoint(args.checkpoint, device=args.device)
    if args.bin:
        vset = VerificationSet.from_bin(args.bin, emb.image_size)
    elif args.pairs and args.root:
        vset = VerificationSet.from_pairs(args.pairs, args.root, emb.image_size)
    else:
        raise ValueError("give --bin FILE, or --pairs pairs.txt with --root IMAGE_ROOT")
    vectors = emb.embed([vset.load(i) for i in range(len(vset))], batch_size=args.batch_size)
    r = evaluate_embeddings(vectors, vset.issame)
    print(
        f"{vset.name}: accuracy {100 * r['acc']:.2f} +- {100 * r['acc_std']:.2f}, "
        f"VAL@FAR=1e-3 {100 * r['val@far1e-3']:.2f}, AUC {r['auc']:.4f}"
    )
    for key in sorted(k for k in r if k.startswith("tar@")):
        tag = key.split("@")[1]
        print(
            f"  TAR@{tag.upper()}: {100 * r[key]:.2f}  threshold cosine "
            f"{r['threshold_cos@' + tag]:.4f} / squared L2 {r['threshold_l2@' + tag]:.4f}"
        )
    return 0


# -- cluster -----------------------------------------------------------------------------------
def _cluster_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("embeddings", help="an .npz written by `resvision face embed`")
    p.add_argument("--threshold", type=float, default=0.5, help="cosine that links two faces")
    p.add_argument(
        "--duplicate-threshold", type=float, default=0.95, help="cosine of near-duplicates"
    )
    p.add_argument("--json", default=None, help="also write the clusters here")
    p.add_argument(
        "--draw",
        default=None,
        metavar="FOLDER",
        help="draw each photo with every face labelled by its cluster (a gallery of photos: "
        "face embed --detector)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace drawn photos that exist")


def _groups(names, ids) -> list[list[str]]:
    out: dict[int, list[str]] = {}
    for n, c in zip(names, ids):
        out.setdefault(int(c), []).append(str(n))
    return list(out.values())


def cluster(args: argparse.Namespace) -> int:
    from resvision.tasks.face.inference import cluster

    vectors, names = load_embeddings(args.embeddings)
    gallery = load_gallery(args.embeddings, "--draw") if args.draw else None
    ids = cluster(vectors, args.threshold)
    groups = _groups(names, ids)
    dup = cluster(vectors, args.duplicate_threshold)
    duplicates = [members for members in _groups(names, dup) if len(members) > 1]
    sizes = sorted((len(v) for v in groups), reverse=True)
    print(
        f"{plural(len(names), 'face')} -> {plural(len(groups), 'cluster')} at cosine >= "
        f"{args.threshold} (largest: {sizes[:5]}); "
        f"{plural(len(duplicates), 'near-duplicate group')} at >= {args.duplicate_threshold}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"clusters": groups, "near_duplicates": duplicates}, indent=1)
        )
    if gallery is not None:
        draw_gallery(
            gallery, [f"cluster {int(c)}" for c in ids], Path(args.draw), overwrite=args.overwrite
        )
    return 0


# -- convert -----------------------------------------------------------------------------------
def _convert_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="an identity folder, or a .rec file / folder holding train.rec")
    p.add_argument("destination", help="a .rec path, or a folder")
    p.add_argument("--to", choices=("rec", "folder"), required=True, help="the output format")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing .rec, or fill a folder that already holds files",
    )


def convert(args: argparse.Namespace) -> int:
    from resvision.datasets.face import folder_to_rec, rec_to_folder
    from resvision.datasets.face.identities import names_path

    source, dest = Path(args.source), Path(args.destination)
    if not source.exists():
        raise FileNotFoundError(f"source {args.source!r} does not exist")
    if args.to == "rec":
        if dest.suffix != ".rec":
            raise ValueError(f"destination {args.destination!r}: a RecordIO file ends in .rec")
        outputs = [dest, dest.with_suffix(".idx"), names_path(dest)]
        check_outputs(outputs, input_folders=[source], overwrite=args.overwrite)
        n = folder_to_rec(source, dest)
    else:
        if dest.is_dir() and any(dest.iterdir()) and not args.overwrite:
            raise FileExistsError(
                f"folder {args.destination!r} already holds files: pass --overwrite to add to "
                "it, or choose an empty folder"
            )
        ensure_writable(dest)
        n = rec_to_folder(source, dest)
    print(f"converted {plural(n, 'image')} -> {args.destination}")
    return 0


SUBCOMMANDS = {
    "embed": predict.FACE,
    "search": Command(
        "nearest gallery faces for each query (faiss)",
        _search_arguments,
        search,
        description="Nearest gallery faces for each query (faiss inner product on unit "
        "vectors = cosine).",
    ),
    "verify": Command(
        "the 10-fold verification protocol on pairs.txt or a .bin set",
        _verify_arguments,
        verify,
        description="InsightFace's 10-fold verification protocol on an LFW-style pairs.txt or a "
        ".bin set, plus TAR@FAR and calibrated thresholds.",
    ),
    "cluster": Command(
        "group faces by a cosine threshold; near-duplicates",
        _cluster_arguments,
        cluster,
        description="Group embeddings whose cosine is at least --threshold (connected "
        "components); list near-duplicates.",
    ),
    "convert": Command(
        "identity folder <-> InsightFace RecordIO",
        _convert_arguments,
        convert,
        description="Convert between identity folders and InsightFace RecordIO (.rec + .idx), "
        "without MXNet.",
    ),
}
