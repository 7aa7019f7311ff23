"""``resvision face search|verify|cluster|convert``: the face-embedding pipeline (``face embed`` is
``predict face``, ``face gallery`` is in :mod:`.gallery_cmd`)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from . import gallery_cmd
from .outputs import BatchReport, check_outputs, ensure_writable, plural
from .tasks import Command


def load_gallery(path: str, flag: str):
    """The :class:`FaceGallery` of an .npz written by ``face embed --detector`` (needed to draw
    photos: it knows where each face is)."""
    import numpy as np

    from resvision.tasks.face.inference import load_embeddings
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
    p.add_argument(
        "--gallery",
        required=True,
        help="the gallery: a folder or milvus://HOST:PORT/COLLECTION (face gallery), or an .npz "
        "(face embed)",
    )
    p.add_argument("--query", required=True, help="the query .npz (face embed)")
    p.add_argument("--top-k", type=int, default=5, help="results per query")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="cosine above which a result counts as the same person: each query is then named "
        "by its best match's person, or 'unknown'",
    )
    gallery_cmd.add_search_arguments(p)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument(
        "--draw",
        default=None,
        metavar="FOLDER",
        help="draw each query photo with every face labelled by its best gallery match (the "
        "query must be a gallery of photos: face embed --detector)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace outputs that exist (--json, drawings)"
    )


def _search_npz(args: argparse.Namespace, query):
    """``(scores, names, labels by name)`` of an exact search in an .npz gallery."""
    import numpy as np

    from resvision.tasks.face.inference import load_embeddings, search

    if args.labels or args.nprobe:
        raise ValueError("--labels and --nprobe search a gallery (face gallery import FILE.npz G)")
    gallery, gnames = load_embeddings(args.gallery)
    if gallery.shape[1] != query.shape[1]:
        raise ValueError(
            f"gallery embeddings are {gallery.shape[1]}-d, queries {query.shape[1]}-d: use one "
            "model for both"
        )
    scores, idx = search(gallery, query, args.top_k)
    names = np.where(idx >= 0, np.asarray(gnames, str)[np.maximum(idx, 0)], "")
    return scores, names, dict(zip(map(str, gnames), _labels(args.gallery)))


def search(args: argparse.Namespace) -> int:
    from resvision.tasks.face.inference import load_embeddings

    npz = gallery_cmd.is_npz(args.gallery)
    _check_json(args, [args.query, *([args.gallery] if npz else [])])
    query, qnames = load_embeddings(args.query)
    if npz:
        scores, names, labels = _search_npz(args, query)
    else:
        scores, names, labels = gallery_cmd.search_gallery(args, query, args.query)
    if args.threshold is not None:
        print(f"(* marks a result with cosine >= {args.threshold}: the same person)")
    results, captions = [], []
    for q, name in enumerate(qnames):
        hits = [
            {"name": str(n), "score": float(s)}
            | ({"match": bool(s >= args.threshold)} if args.threshold is not None else {})
            for s, n in zip(scores[q], names[q])
            if n
        ]
        result = {"query": str(name), "results": hits}
        shown = ", ".join(
            f"{h['name']} {h['score']:.3f}{' *' if h.get('match') else ''}" for h in hits
        )
        if args.threshold is not None:
            result["person"] = labels[hits[0]["name"]] if hits and hits[0]["match"] else "unknown"
            shown += f" -> {result['person']}"
        results.append(result)
        print(f"{name}: {shown}")
        if hits:
            who = "unknown" if result.get("person") == "unknown" else labels[hits[0]["name"]]
            captions.append(f"{who} {hits[0]['score']:.2f}")
        else:
            captions.append("?")
    if args.json:
        _write_json(args.json, results)
    if args.draw:
        draw_gallery(
            load_gallery(args.query, "--draw"), captions, Path(args.draw), overwrite=args.overwrite
        )
    return 0


def _check_json(args: argparse.Namespace, inputs: list[str]) -> None:
    """``--json``, refused before any work if it would replace an input or (without
    ``--overwrite``) an existing file."""
    if args.json:
        check_outputs([Path(args.json)], inputs=[Path(i) for i in inputs], overwrite=args.overwrite)


def _write_json(path: str, value) -> None:
    from resvision.tasks.engine.files import atomic_write_text

    atomic_write_text(Path(path), json.dumps(value, indent=1))


def _labels(path: str) -> list[str]:
    """Who each gallery face is: its ``labels`` (galleries of photos), else its name."""
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        return [str(v) for v in (data["labels"] if "labels" in data else data["names"])]


# -- verify ------------------------------------------------------------------------------------
def _verify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--embeddings",
        default=None,
        help="verify an .npz of `face embed` instead (every pair of its faces; the same person "
        "= the same label: the photo's folder, or the name's folder for face crops)",
    )
    p.add_argument(
        "--max-pairs",
        type=int,
        default=200_000,
        help="with --embeddings: at most this many different-person pairs (a seeded sample); "
        "every same-person pair is kept",
    )
    p.add_argument("--checkpoint", default=None, help="a face run folder or checkpoint file")
    p.add_argument("--pairs", default=None, help="pairs.txt (with --root)")
    p.add_argument("--root", default=None, help="image root of pairs.txt")
    p.add_argument("--bin", default=None, help="an InsightFace .bin verification set")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument(
        "--plot", default=None, metavar="PNG", help="write the ROC curve, thresholds marked"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a --plot file that exists")


def _face_labels(path: str) -> list[str]:
    """A file's labels (:func:`~resvision.tasks.face.evaluation.face_labels`), its name in
    the error."""
    import numpy as np

    from resvision.tasks.face.evaluation import face_labels

    with np.load(path, allow_pickle=False) as data:
        labels, names = data.get("labels"), data["names"]
    try:
        return face_labels(names, labels)
    except ValueError as e:
        raise ValueError(f"{path!r}: {e}") from None


def _verify_embeddings(args: argparse.Namespace):
    import numpy as np

    from resvision.tasks.face.inference import load_embeddings

    vectors, _ = load_embeddings(args.embeddings)
    labels = _face_labels(args.embeddings)
    from resvision.tasks.face.evaluation import embedding_pairs

    first, second, issame = embedding_pairs(labels, args.max_pairs)
    people = len(set(labels))
    if issame.all() or not issame.any():
        raise ValueError(
            f"{args.embeddings!r}: {plural(len(labels), 'face')} of "
            f"{plural(people, 'person', 'people')} give no "
            f"{'different' if issame.all() else 'same'}-person pair: verification needs at "
            "least two people and two faces of one of them"
        )
    if issame.size < 20:
        raise ValueError(
            f"{args.embeddings!r}: only {plural(issame.size, 'pair')}; the 10-fold protocol "
            "needs at least 20"
        )
    pairs = np.empty((2 * issame.size, vectors.shape[1]), np.float32)
    pairs[0::2], pairs[1::2] = vectors[first], vectors[second]
    print(
        f"{args.embeddings}: {plural(len(labels), 'face')} of {plural(people, 'person', 'people')}"
        f", {plural(int(issame.sum()), 'same-person pair')}, "
        f"{plural(int((~issame).sum()), 'different-person pair')}"
    )
    return pairs, issame, Path(args.embeddings).name


def verify(args: argparse.Namespace) -> int:
    from resvision.datasets.face import VerificationSet
    from resvision.tasks.face.evaluation import evaluate_embeddings
    from resvision.tasks.face.inference import Embedder

    if args.plot:
        sources = [args.embeddings, args.bin, args.pairs]
        check_outputs(
            [Path(args.plot)], inputs=[Path(s) for s in sources if s], overwrite=args.overwrite
        )
    if args.embeddings:
        if args.checkpoint or args.bin or args.pairs:
            raise ValueError(
                "--embeddings verifies a file of embeddings: give it alone (without "
                "--checkpoint, --bin or --pairs)"
            )
        vectors, issame, name = _verify_embeddings(args)
        _print_verification(name, evaluate_embeddings(vectors, issame))
        _plot(args, name, vectors, issame)
        return 0
    if not args.checkpoint:
        raise ValueError(
            "give --checkpoint RUN with --bin FILE or --pairs pairs.txt --root IMAGE_ROOT, "
            "or --embeddings FILE.npz"
        )
    emb = Embedder.from_checkpoint(args.checkpoint, device=args.device)
    if args.bin:
        vset = VerificationSet.from_bin(args.bin, emb.image_size)
    elif args.pairs and args.root:
        vset = VerificationSet.from_pairs(args.pairs, args.root, emb.image_size)
    else:
        raise ValueError("give --bin FILE, or --pairs pairs.txt with --root IMAGE_ROOT")
    vectors = emb.embed([vset.load(i) for i in range(len(vset))], batch_size=args.batch_size)
    _print_verification(vset.name, evaluate_embeddings(vectors, vset.issame))
    _plot(args, vset.name, vectors, vset.issame)
    return 0


def _plot(args: argparse.Namespace, name: str, vectors, issame) -> None:
    if not args.plot:
        return
    from resvision.tasks.face.evaluation import FARS, pair_cosines
    from resvision.tasks.face.visualize import save_roc_png

    path = save_roc_png({name: (pair_cosines(vectors), issame)}, Path(args.plot), FARS)
    print(f"ROC curve -> {path}")


def _print_verification(name: str, r: dict) -> None:
    print(
        f"{name}: accuracy {100 * r['acc']:.2f} +- {100 * r['acc_std']:.2f}, "
        f"VAL@FAR=1e-3 {100 * r['val@far1e-3']:.2f}, AUC {r['auc']:.4f}"
    )
    for key in sorted(k for k in r if k.startswith("tar@")):
        tag = key.split("@")[1]
        print(
            f"  TAR@{tag.upper()}: {100 * r[key]:.2f}  threshold cosine "
            f"{r['threshold_cos@' + tag]:.4f} / squared L2 {r['threshold_l2@' + tag]:.4f}"
        )


# -- cluster -----------------------------------------------------------------------------------
def _cluster_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "embeddings", nargs="?", default=None, help="an .npz written by `resvision face embed`"
    )
    gallery_cmd.add_cluster_arguments(p)
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
    p.add_argument(
        "--overwrite", action="store_true", help="replace outputs that exist (--json, drawings)"
    )


def _groups(names, ids) -> list[list[str]]:
    out: dict[int, list[str]] = {}
    for n, c in zip(names, ids):
        out.setdefault(int(c), []).append(str(n))
    return list(out.values())


def cluster(args: argparse.Namespace) -> int:
    from resvision.tasks.face.clustering import cluster_graph, exact_knn, saturated
    from resvision.tasks.face.inference import load_embeddings

    if bool(args.embeddings) == bool(args.gallery):
        raise ValueError("give an .npz of `resvision face embed`, or --gallery GALLERY")
    if args.k < 1:
        raise ValueError(f"--k {args.k}: the graph needs at least one neighbour per face")
    _check_json(args, [args.embeddings] if args.embeddings else [])
    if args.gallery:
        names, labels, scores, neighbours, drawable = gallery_cmd.gallery_knn(args)
    else:
        vectors, names = load_embeddings(args.embeddings)
        drawable = load_gallery(args.embeddings, "--draw") if args.draw else None
        scores, neighbours = exact_knn(vectors, min(args.k, max(len(vectors) - 1, 0)))
        labels = gallery_cmd.npz_labels(args.embeddings, names)
    ids = cluster_graph(scores, neighbours, args.threshold, args.method)
    dup = cluster_graph(scores, neighbours, args.duplicate_threshold, "threshold")
    more = int(saturated(scores, neighbours, args.threshold).sum())
    groups = _groups(names, ids)
    duplicates = [members for members in _groups(names, dup) if len(members) > 1]
    sizes = sorted((len(v) for v in groups), reverse=True)
    print(
        f"{plural(len(names), 'face')} -> {plural(len(groups), 'cluster')} ({args.method}) at "
        f"cosine > {args.threshold} (largest: {sizes[:5]}); "
        f"{plural(len(duplicates), 'near-duplicate group')} at > {args.duplicate_threshold}"
    )
    if more:
        print(
            f"note: {plural(more, 'face')} have more than --k {args.k} neighbours above the "
            "threshold; links past the k-th were not followed (raise --k to follow them)"
        )
    scores = gallery_cmd.print_scores(ids, labels, args.method) if args.labels else None
    if args.json:
        found = {"clusters": groups, "near_duplicates": duplicates}
        _write_json(args.json, found | ({"scores": scores} if scores else {}))
    if drawable is not None:
        draw_gallery(
            drawable, [f"cluster {int(c)}" for c in ids], Path(args.draw), overwrite=args.overwrite
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


SEARCH = Command(
    "nearest gallery faces for each query (faiss)",
    _search_arguments,
    search,
    description="Nearest gallery faces for each query (cosine): in a gallery (exact, or its "
    "index above 50,000 faces) or an .npz (exact).",
)
VERIFY = Command(
    "the 10-fold verification protocol on pairs.txt, a .bin set or a labelled gallery",
    _verify_arguments,
    verify,
    description="InsightFace's 10-fold verification protocol on an LFW-style pairs.txt, a .bin "
    "set, or every pair of faces of an embeddings file whose faces are labelled (--embeddings), "
    "plus TAR@FAR and calibrated thresholds.",
)
CLUSTER = Command(
    "group faces by a cosine threshold; near-duplicates",
    _cluster_arguments,
    cluster,
    description="Group faces from each face's --k nearest neighbours: the links above "
    "--threshold, as connected components or by Chinese whispers (--method); list "
    "near-duplicates; with --labels, score the clusters against who each face is.",
)
CONVERT = Command(
    "identity folder <-> InsightFace RecordIO",
    _convert_arguments,
    convert,
    description="Convert between identity folders and InsightFace RecordIO (.rec + .idx), "
    "without MXNet.",
)
