"""``resvision face gallery {info,import,export,remove,relabel,index}`` and the gallery side of
``face search --gallery``, ``face cluster --gallery`` and ``face embed --gallery``.

A gallery is a folder (the embedded default) or ``milvus://HOST:PORT/COLLECTION``
(``milvus:PATH.db/COLLECTION`` for milvus-lite); an argument ending in ``.npz`` is today's
embeddings file, read whole as before.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

from .outputs import check_outputs, plural
from .tasks import Command

log = logging.getLogger("resvision")

if TYPE_CHECKING:
    import numpy as np

    from resvision.tasks.face.gallery import EmbeddingSource, Gallery


def is_npz(path: str) -> bool:
    return str(path).endswith(".npz")


def open_gallery(path: str) -> Gallery:
    from resvision.tasks.face.gallery import Gallery

    return Gallery.open(path)


def source_of_checkpoint(checkpoint: str, *, flip: bool, alignment: str) -> EmbeddingSource:
    """The :class:`EmbeddingSource` of a face run's embeddings (loads its weights)."""
    from resvision.tasks.face.gallery import EmbeddingSource
    from resvision.tasks.face.inference import Embedder

    emb = Embedder.from_checkpoint(checkpoint, device="cpu")
    return EmbeddingSource(emb.fingerprint, alignment, flip)


def query_source(path: str) -> EmbeddingSource | None:
    """The source an ``.npz`` of ``face embed`` records (None for files written before)."""
    import numpy as np

    from resvision.tasks.face.gallery import EmbeddingSource

    with np.load(path, allow_pickle=False) as data:
        return EmbeddingSource.from_json(str(data["source"])) if "source" in data.files else None


# -- face search --gallery GALLERY --------------------------------------------------------------
def add_search_arguments(p: argparse.ArgumentParser) -> None:
    """The options ``face search`` has for galleries."""
    p.add_argument(
        "--labels",
        nargs="+",
        default=None,
        metavar="LABEL",
        help="search only the faces of these people (a gallery)",
    )
    p.add_argument(
        "--nprobe",
        type=int,
        default=None,
        help="index lists searched per query (a gallery with an index; default: its own)",
    )


def search_gallery(args: argparse.Namespace, queries: np.ndarray, query_file: str):
    """``(scores, gallery names, their labels)`` of ``face search --gallery GALLERY``."""
    from resvision.tasks.face.gallery.base import check_source

    g = open_gallery(args.gallery)
    try:
        stated = query_source(query_file)
        if stated is not None and g.source is not None:
            # queries need the gallery's model and flip; face crops (alignment "none", taken
            # as aligned) may search faces aligned from landmarks, and the other way round
            same_alignment = dataclasses.replace(stated, alignment=g.source.alignment)
            check_source(g.source, same_alignment, empty=False, where=f"gallery {args.gallery!r}")
            if stated.alignment != g.source.alignment:
                log.warning(
                    "the queries were aligned by %s, the gallery's faces by %s: results hold if "
                    "the crops were aligned as the model was trained",
                    stated.alignment,
                    g.source.alignment,
                )
        scores, names = g.search(queries, args.top_k, labels=args.labels, nprobe=args.nprobe)
        flat = [n for n in names.ravel().tolist() if n]
        labels = dict(zip(flat, g.faces(flat, columns=("label",))["label"].tolist()))
    finally:
        g.close()
    return scores, names, labels


# -- face cluster [--gallery GALLERY] -----------------------------------------------------------
# resvision.tasks.face.clustering.METHODS, not imported: the parser is built without numpy
METHODS = ("threshold", "chinese-whispers")


def add_cluster_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gallery",
        default=None,
        help="cluster a gallery (a folder, or milvus://HOST:PORT/COLLECTION) instead of an .npz",
    )
    p.add_argument(
        "--method",
        choices=METHODS,
        default="threshold",
        help="threshold: connected components of the links above --threshold (one link joins "
        "two people); chinese-whispers: each face takes the label its links weigh most for "
        "(no chaining through single links)",
    )
    p.add_argument(
        "--k", type=int, default=32, help="neighbours per face in the graph the methods read"
    )
    p.add_argument(
        "--labels",
        action="store_true",
        help="score the clusters against the faces' labels (who each face is): pairwise and "
        "BCubed precision, recall and F; unlabelled faces are left out of the scores",
    )


def gallery_knn(args: argparse.Namespace):
    """``(names, labels, scores, neighbours, drawable)`` of ``face cluster --gallery``: the
    gallery's k-nearest-neighbour graph and who its faces are."""
    g = open_gallery(args.gallery)
    try:
        scores, neighbours = g.knn(args.k)
        faces = g.faces()
    finally:
        g.close()
    drawable = _drawable(faces) if args.draw else None
    return faces["name"], faces["label"], scores, neighbours, drawable


def npz_labels(path: str, names) -> np.ndarray:
    """Who each face of an .npz is: its ``labels``, else each crop's folder (``""`` when at the
    top)."""
    import numpy as np

    from resvision.tasks.face.gallery.npz import crop_label

    with np.load(path, allow_pickle=False) as data:
        if "labels" in data.files:
            return data["labels"].astype(str)
    return np.array([crop_label(str(n)) for n in names], dtype=str)


def _drawable(faces: dict) -> SimpleNamespace:
    """What ``face_cmd.draw_gallery`` reads, from a gallery's faces (all must know their
    photo)."""
    if not len(faces["name"]) or (faces["photos"] == "").any():
        raise ValueError(
            "--draw needs faces found in photos (`face embed --detector ... --gallery`): this "
            "gallery holds faces without their photo"
        )
    return SimpleNamespace(
        photos=faces["photos"],
        paths=faces["paths"],
        boxes=faces["boxes"],
        landmarks=faces["landmarks"],
    )


def print_scores(ids, labels, method: str) -> dict[str, float] | None:
    """``--labels``: pairwise and BCubed scores over the labelled faces."""
    import numpy as np

    from resvision.tasks.face.clustering import cluster_scores

    known = np.asarray(labels) != ""
    if not known.any():
        raise ValueError(
            "--labels: no face says who it is (give labels when adding, or face crops in one "
            "folder per person)"
        )
    r = cluster_scores(np.asarray(ids)[known], np.asarray(labels)[known])
    print(
        f"{method} vs labels ({plural(int(known.sum()), 'labelled face')} of "
        f"{plural(r['people'], 'person', 'people')}): BCubed precision "
        f"{100 * r['bcubed_precision']:.1f}, recall {100 * r['bcubed_recall']:.1f}, "
        f"F {100 * r['bcubed_f']:.1f}; pairwise precision {100 * r['pairwise_precision']:.1f}, "
        f"recall {100 * r['pairwise_recall']:.1f}, F {100 * r['pairwise_f']:.1f}"
    )
    return r


# -- face embed --gallery GALLERY ---------------------------------------------------------------
def gallery_parts(path: str) -> Path:
    """Where ``face embed --gallery`` keeps its run's parts until they are added: beside a
    gallery folder (``G.parts``), beside a milvus-lite file (``PATH.db.COLLECTION.parts``), or in
    the working folder for a Milvus server (``COLLECTION.milvus.parts``)."""
    if str(path).startswith("milvus:"):
        from resvision.tasks.face.gallery.milvus import parse

        uri, _, collection = parse(path)
        if uri.startswith("http://"):
            return Path(f"{collection}.milvus.parts")
        return Path(f"{uri}.{collection}.parts")
    return Path(f"{str(path).rstrip('/')}.parts")


def skip_known(args: argparse.Namespace, run, source: EmbeddingSource, dim: int) -> list | None:
    """Refuse a gallery of another model or width, then leave the photos it holds out of
    ``run.images``: returns them, or None (after saying so) when no photo is new. A photo (or
    face crop) is known by its file (the resolved path), so the same folder added twice is
    read once; a new photo whose gallery name
    (:func:`~resvision.tasks.face.gallery.writer.photo_name`) another file already holds is
    refused before any work. When no photo is new, the parts of a run killed after its faces
    were added (before its parts were removed) go: that run is done."""
    import shutil

    from resvision.tasks.engine import distributed as D
    from resvision.tasks.face.gallery.writer import check_writable, photo_name

    try:
        g = open_gallery(args.gallery)
    except FileNotFoundError:
        return []
    try:
        check_writable(g, dim, source)
        held = g.photos()
    finally:
        g.close()
    files = set(held["path"].tolist())
    fresh = [i for i in run.images if str(i.path.resolve()) not in files]
    known = [i for i in run.images if str(i.path.resolve()) in files]
    taken = set(held["photo"].tolist()) & {photo_name(i.name, i.path) for i in fresh}
    if taken:
        raise ValueError(
            f"gallery {args.gallery!r} already holds a photo named {sorted(taken)[0]!r} from "
            f"another file ({plural(len(taken), 'name')} taken): photos are named by their "
            "folder and relative path, so give the folder from a parent with another name, or "
            "remove those photos first (face gallery remove --photos)"
        )
    run.images, run.per_image = fresh, [[] for _ in fresh]
    if fresh:
        return known
    if D.current().is_main:
        shutil.rmtree(run.parts, ignore_errors=True)  # a finished run's (its faces are there)
        print(
            f"nothing new to add to {args.gallery}: "
            f"{plural(len(known), 'photo' if args.detector else 'image')} already in the "
            "gallery skipped"
        )
    return None


# -- face gallery ... ---------------------------------------------------------------------------
def _info(args: argparse.Namespace) -> int:
    g = open_gallery(args.gallery)
    try:
        info = g.info()
    finally:
        g.close()
    width = max(len(k) for k in info)
    for key, value in info.items():
        shown = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value
        if key == "bytes":
            shown = f"{value / 1e6:,.1f} MB"
        print(f"{key.replace('_', ' '):<{width}}  {shown}")
    return 0


def _import(args: argparse.Namespace) -> int:
    import numpy as np

    from resvision.tasks.face.gallery import read_npz
    from resvision.tasks.face.gallery.writer import open_for_writing

    sources = [Path(s) for s in args.files]
    for s in sources:
        if not is_npz(str(s)):
            raise ValueError(f"{s}: import reads .npz files written by `resvision face embed`")
    first, recorded = read_npz(sources[0])
    dim = int(np.asarray(first["embeddings"]).shape[1])
    stated = None
    if args.checkpoint:
        alignment = args.alignment or ("norm_crop" if "boxes" in first else "none")
        stated = source_of_checkpoint(args.checkpoint, flip=not args.no_flip, alignment=alignment)
    g = open_for_writing(args.gallery, dim, stated or recorded)
    total = 0
    t0 = time.perf_counter()
    try:
        for s in sources:
            total += g.import_npz(s, source=stated)
            print(f"{s}: imported")
        print(
            f"imported {plural(total, 'face')} into {args.gallery} (now {len(g):,}) in "
            f"{time.perf_counter() - t0:.1f} s"
        )
    finally:
        g.close()
    return 0


def _export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if not is_npz(str(out)):
        raise ValueError(f"{args.out!r}: export writes an .npz")
    check_outputs([out], overwrite=args.overwrite)
    g = open_gallery(args.gallery)
    try:
        kind = g.export_npz(out)
        print(f"exported {plural(len(g), 'face')} as {kind} -> {out}")
    finally:
        g.close()
    return 0


def _remove(args: argparse.Namespace) -> int:
    if not (args.names or args.labels or args.photos):
        raise ValueError("say what to remove: --labels, --photos or --names")
    g = open_gallery(args.gallery)
    try:
        n = g.remove(names=args.names, labels=args.labels, photos=args.photos)
        print(f"removed {plural(n, 'face')} from {args.gallery} (now {len(g):,})")
    finally:
        g.close()
    return 0


def _relabel(args: argparse.Namespace) -> int:
    g = open_gallery(args.gallery)
    try:
        existed = args.to in set(g.labels.tolist())
        n = g.relabel(args.labels, args.to)
    finally:
        g.close()
    verb = "merged into" if existed or len(args.labels) > 1 else "relabelled"
    print(f"{plural(n, 'face')} of {args.labels} {verb} {args.to!r}")
    return 0


def _index(args: argparse.Namespace) -> int:
    from resvision.tasks.face.gallery import EXACT_BELOW

    g = open_gallery(args.gallery)
    try:
        if not hasattr(g, "set_search"):
            raise ValueError(f"{args.gallery}: the server manages its index")
        values = {k: getattr(args, k) for k in ("nlist", "pq", "nprobe", "rerank")}
        if args.reset:
            g.set_search(exact_below=EXACT_BELOW, **dict.fromkeys(values))
        elif args.exact_below is not None or any(v is not None for v in values.values()):
            chosen = {k: v for k, v in values.items() if v is not None}
            g.set_search(exact_below=args.exact_below, **chosen)
        else:
            print(g.maintain())
        print(f"search: {g.info()['search']}")
    finally:
        g.close()
    return 0


def _gallery_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="gallery_command", metavar="ACTION", required=True)
    where = "the gallery: a folder, or milvus://HOST:PORT/COLLECTION"

    q = sub.add_parser("info", help="what a gallery holds and how it is searched")
    q.add_argument("gallery", help=where)
    q.set_defaults(action=_info)

    q = sub.add_parser(
        "import",
        help="add the faces of .npz files of `face embed` (created when missing)",
        description="Add every face of .npz files written by `resvision face embed` (embeddings "
        "of face crops, or galleries of photos written with --detector) to a gallery, each "
        "file in one atomic update; the gallery is created when it does not exist.",
    )
    q.add_argument("files", nargs="+", help=".npz files of `resvision face embed`")
    q.add_argument("gallery", help=where)
    q.add_argument(
        "--checkpoint",
        default=None,
        help="the face run that made the embeddings, for files that do not record it "
        "(written before galleries): the gallery then refuses embeddings of other models",
    )
    q.add_argument("--no-flip", action="store_true", help="with --checkpoint: made without flip")
    q.add_argument(
        "--alignment",
        choices=("norm_crop", "none"),
        default=None,
        help="with --checkpoint: how faces were cropped (default: norm_crop for galleries of "
        "photos, none for face crops)",
    )
    q.set_defaults(action=_import)

    q = sub.add_parser("export", help="write a gallery as today's .npz")
    q.add_argument("gallery", help=where)
    q.add_argument("out", help="the .npz to write (a gallery of photos, or embeddings)")
    q.add_argument("--overwrite", action="store_true", help="replace an existing file")
    q.set_defaults(action=_export)

    q = sub.add_parser("remove", help="remove faces by person, photo or name")
    q.add_argument("gallery", help=where)
    q.add_argument("--labels", nargs="+", default=None, help="every face of these people")
    q.add_argument(
        "--photos",
        nargs="+",
        default=None,
        help="every face of these photos (their names in the gallery); they are forgotten, so "
        "`face embed --gallery` reads them again",
    )
    q.add_argument("--names", nargs="+", default=None, help="these faces")
    q.set_defaults(action=_remove)

    q = sub.add_parser("relabel", help="rename a person, or merge several into one")
    q.add_argument("gallery", help=where)
    q.add_argument("labels", nargs="+", help="the label(s) to change")
    q.add_argument("--to", required=True, help="the new label (an existing one merges)")
    q.set_defaults(action=_relabel)

    q = sub.add_parser(
        "index",
        help="bring the index up to date, or change how the gallery is searched",
        description="Without options: build, extend or compact the index as the gallery's "
        "size calls for (updates do this themselves). With options: record them (they "
        "persist) and rebuild as they require.",
    )
    q.add_argument("gallery", help=where)
    q.add_argument(
        "--exact-below", type=int, default=None, help="faces below which search is exact"
    )
    q.add_argument("--nlist", type=int, default=None, help="IVF lists (retrains)")
    q.add_argument("--pq", type=int, default=None, help="PQ codes per face (retrains)")
    q.add_argument("--nprobe", type=int, default=None, help="lists searched per query")
    q.add_argument("--rerank", type=int, default=None, help="candidates re-scored exactly")
    q.add_argument("--reset", action="store_true", help="back to the size's defaults")
    q.set_defaults(action=_index)


def _gallery(args: argparse.Namespace) -> int:
    return args.action(args)


GALLERY = Command(
    "a face gallery: info, import, export, remove, relabel, index",
    _gallery_arguments,
    _gallery,
    description="Face galleries that scale: embeddings with their photos, boxes and people in "
    "a folder (SQLite + memory-mapped vectors + a faiss index; no server) or on a Milvus "
    "server, with atomic updates. Make one with `face embed ... --gallery G` or `face gallery "
    "import FILE.npz G`; search and cluster it with `face search --gallery G` and `face "
    "cluster --gallery G`.",
)
