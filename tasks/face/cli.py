"""``resvision face embed|search|verify|cluster|convert``, ``export face``, ``benchmark face``."""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from resvision.datasets.images import list_images

FMT = argparse.ArgumentDefaultsHelpFormatter


def _load_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"embedding file {path!r} does not exist (write one with `resvision face embed`)"
        )
    data = np.load(p, allow_pickle=False)
    if "embeddings" not in data or "names" not in data:
        raise ValueError(
            f"{path!r} is not an embedding file: it needs 'embeddings' and 'names' arrays"
        )
    return data["embeddings"].astype(np.float32), data["names"]


# -- embed -------------------------------------------------------------------------------------
def embed_main(argv: list[str]) -> int:
    from resvision.datasets.face import read_landmarks

    from .inference import Embedder

    p = argparse.ArgumentParser(
        prog="resvision face embed",
        formatter_class=FMT,
        description="Embed every image of a folder (recursively) into an .npz: embeddings (N, D) float32 unit length, names (relative paths).",
    )
    p.add_argument("folder")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-flip", action="store_true", help="no flip test-time augmentation")
    p.add_argument(
        "--landmarks",
        default=None,
        help="JSON/CSV of 5-point landmarks per image (relative names): align with norm_crop",
    )
    args = p.parse_args(argv)
    folder = Path(args.folder)
    files = list_images(folder)
    if not files:
        raise FileNotFoundError(f"no images under {args.folder!r}")
    names = [f.relative_to(folder).as_posix() for f in files]
    marks = None
    if args.landmarks:
        table = read_landmarks(args.landmarks)
        missing = [n for n in names if n not in table]
        if missing:
            raise ValueError(
                f"{len(missing)} images have no landmarks in {args.landmarks}, e.g. {missing[:3]}"
            )
        marks = [table[n] for n in names]
    emb = Embedder.from_checkpoint(args.checkpoint, device=args.device)
    t0 = time.perf_counter()
    vectors = emb.embed(files, landmarks=marks, flip=not args.no_flip, batch_size=args.batch_size)
    np.savez(args.out, embeddings=vectors, names=np.array(names))
    print(
        f"{len(files)} images -> {args.out} ({vectors.shape[1]}-d, {len(files) / (time.perf_counter() - t0):.1f} images/s)"
    )
    return 0


def search_main(argv: list[str]) -> int:
    from .inference import search

    p = argparse.ArgumentParser(
        prog="resvision face search",
        formatter_class=FMT,
        description="Nearest gallery faces for each query (faiss inner product on unit vectors = cosine).",
    )
    p.add_argument("--gallery", required=True)
    p.add_argument("--query", required=True)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="cosine above which a result counts as the same person",
    )
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    gallery, gnames = _load_npz(args.gallery)
    query, qnames = _load_npz(args.query)
    if gallery.shape[1] != query.shape[1]:
        raise ValueError(
            f"gallery embeddings are {gallery.shape[1]}-d, queries {query.shape[1]}-d: use one model for both"
        )
    scores, idx = search(gallery, query, args.top_k)
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
    return 0


def verify_main(argv: list[str]) -> int:
    from resvision.datasets.face import VerificationSet

    from .inference import Embedder
    from .verification import evaluate_embeddings

    p = argparse.ArgumentParser(
        prog="resvision face verify",
        formatter_class=FMT,
        description="InsightFace's 10-fold verification protocol on an LFW-style pairs.txt or a .bin set, plus TAR@FAR and calibrated thresholds.",
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--pairs", default=None, help="pairs.txt (with --root)")
    p.add_argument("--root", default=None, help="image root of pairs.txt")
    p.add_argument("--bin", default=None, help="an InsightFace .bin verification set")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args(argv)
    emb = Embedder.from_checkpoint(args.checkpoint, device=args.device)
    if args.bin:
        vset = VerificationSet.from_bin(args.bin, emb.image_size)
    elif args.pairs and args.root:
        vset = VerificationSet.from_pairs(args.pairs, args.root, emb.image_size)
    else:
        raise ValueError("give --bin FILE, or --pairs pairs.txt with --root IMAGE_ROOT")
    vectors = emb.embed([vset.load(i) for i in range(len(vset))], batch_size=args.batch_size)
    report = evaluate_embeddings(vectors, vset.issame)
    print(
        f"{vset.name}: accuracy {100 * report['acc']:.2f} +- {100 * report['acc_std']:.2f}, VAL@FAR=1e-3 {100 * report['val@far1e-3']:.2f}, AUC {report['auc']:.4f}"
    )
    for key in sorted(k for k in report if k.startswith("tar@")):
        tag = key.split("@")[1]
        print(
            f"  TAR@{tag.upper()}: {100 * report[key]:.2f}  threshold cosine {report['threshold_cos@' + tag]:.4f} / squared L2 {report['threshold_l2@' + tag]:.4f}"
        )
    return 0


def cluster_main(argv: list[str]) -> int:
    from .inference import cluster

    p = argparse.ArgumentParser(
        prog="resvision face cluster",
        formatter_class=FMT,
        description="Group embeddings whose cosine is at least --threshold (connected components); list near-duplicates.",
    )
    p.add_argument("embeddings")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--duplicate-threshold", type=float, default=0.95)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    vectors, names = _load_npz(args.embeddings)
    ids = cluster(vectors, args.threshold)
    groups: dict[int, list[str]] = {}
    for name, c in zip(names, ids):
        groups.setdefault(int(c), []).append(str(name))
    dup = cluster(vectors, args.duplicate_threshold)
    duplicates = [members for members in _groups(names, dup) if len(members) > 1]
    sizes = sorted((len(v) for v in groups.values()), reverse=True)
    print(
        f"{len(names)} faces -> {len(groups)} clusters at cosine >= {args.threshold} (largest: {sizes[:5]}); {len(duplicates)} near-duplicate groups at >= {args.duplicate_threshold}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"clusters": list(groups.values()), "near_duplicates": duplicates}, indent=1)
        )
    return 0


def _groups(names: np.ndarray, ids: np.ndarray) -> list[list[str]]:
    out: dict[int, list[str]] = {}
    for n, c in zip(names, ids):
        out.setdefault(int(c), []).append(str(n))
    return list(out.values())


def convert_main(argv: list[str]) -> int:
    from resvision.datasets.face import folder_to_rec, rec_to_folder

    p = argparse.ArgumentParser(
        prog="resvision face convert",
        formatter_class=FMT,
        description="Convert between identity folders and InsightFace RecordIO (.rec + .idx), without MXNet.",
    )
    p.add_argument("source", help="an identity folder, or a .rec file / folder holding train.rec")
    p.add_argument("destination", help="a .rec path, or a folder")
    p.add_argument("--to", choices=("rec", "folder"), required=True)
    args = p.parse_args(argv)
    n = (
        folder_to_rec(args.source, args.destination)
        if args.to == "rec"
        else rec_to_folder(args.source, args.destination)
    )
    print(f"converted {n} images -> {args.destination}")
    return 0


def face_main(argv: list[str]) -> int:
    commands = {
        "embed": embed_main,
        "search": search_main,
        "verify": verify_main,
        "cluster": cluster_main,
        "convert": convert_main,
    }
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print("usage: resvision face {embed,search,verify,cluster,convert} ...\n\n"
              "  embed    embed a folder of face images into an .npz\n"
              "  search   nearest gallery faces for each query (faiss)\n"
              "  verify   the 10-fold verification protocol on pairs.txt or a .bin set\n"
              "  cluster  group faces by a cosine threshold; near-duplicates\n"
              "  convert  identity folder <-> InsightFace RecordIO")  # fmt: skip
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return commands[argv[0]](argv[1:])


# -- export ------------------------------------------------------------------------------------
class ExportWrapper(torch.nn.Module):
    """``images (N, 3, S, S)`` float pixels 0-255 RGB -> unit-length embeddings ``(N, D)``."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.model(images), dim=1)


def export_main(argv: list[str]) -> int:
    from .task import FaceTask

    p = argparse.ArgumentParser(
        prog="resvision export face",
        formatter_class=FMT,
        description="Export the embedding model to ONNX with a dynamic batch dimension, checked against PyTorch with onnxruntime.",
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--format", choices=("onnx",), default="onnx")
    p.add_argument("--out", default=None)
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--tolerance", type=float, default=1e-4)
    args = p.parse_args(argv)
    model, cfg = FaceTask().load_for_inference(args.checkpoint, device="cpu")
    size = cfg.data.image_size
    ckpt = Path(args.checkpoint)
    out = Path(args.out) if args.out else (ckpt if ckpt.is_dir() else ckpt.parent) / "embedder.onnx"
    wrapper = ExportWrapper(model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (torch.rand(2, 3, size, size) * 255,), str(out), input_names=["images"], output_names=["embeddings"],
                          dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}}, opset_version=args.opset, dynamo=False)  # fmt: skip
    import onnxruntime as ort

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    worst = 0.0
    for n in (1, 5):
        x = (np.random.default_rng(n).random((n, 3, size, size)) * 255).astype(np.float32)
        with torch.no_grad():
            ref = wrapper(torch.from_numpy(x)).numpy()
        got = session.run(None, {"images": x})[0]
        diff = float(np.abs(ref - got).max())
        worst = max(worst, diff)
        print(f"batch {n}: max |onnx - torch| {diff:.2e}")
    if worst > args.tolerance:
        print(f"FAILED: difference {worst:.2e} above --tolerance {args.tolerance:g}")
        return 1
    print(f"wrote {out} (input: images float32 (N, 3, {size}, {size}) pixels 0-255 RGB, aligned)")
    return 0


def benchmark_main(argv: list[str]) -> int:
    from .benchmark import main

    return main(argv)
