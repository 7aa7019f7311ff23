"""``resvision face ijb``: IJB-B / IJB-C 1:1 verification and 1:N identification, the figures of
InsightFace's evaluation scripts, from a checkpoint or from precomputed image features."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .outputs import plural
from .predict import add_bulk_arguments, bulk_device, check_bulk_outputs
from .tasks import Command


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", required=True, help="the IJB folder: meta/ and loose_crop/")
    p.add_argument(
        "--target",
        required=True,
        type=str.upper,
        choices=("IJBB", "IJBC"),
        help="which protocol (meta/ijbb_* or meta/ijbc_*)",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--checkpoint",
        help="a face run folder (its best.pt, else last.pt), a checkpoint file, or an "
        "arcface_torch backbone.pth",
    )
    source.add_argument(
        "--features",
        metavar="FILE",
        help="precomputed image features instead of a model: an (N, D) .npy, one row per line "
        "of meta/<target>_name_5pts_score.txt in its order (flip-summed when flipping was used; "
        "NaN rows for images that could not be read), or an .npz of ijb_evals.py (embs, embs_f)",
    )
    p.add_argument(
        "--save-features",
        metavar="FILE.npy",
        help="also write the image features computed here (reuse them with --features)",
    )
    p.add_argument("--out", help="write ijb.json, roc.png and scores.npy into this folder")
    p.add_argument(
        "--no-flip", action="store_true", help="embed each crop alone (no mirrored crop added)"
    )
    p.add_argument(
        "--no-norm",
        action="store_true",
        help="L2-normalize each image's feature before pooling (by default its length is kept, "
        "which weighs confident images up: eval_ijbc.py's use_norm_score=True)",
    )
    p.add_argument(
        "--no-detector-score",
        action="store_true",
        help="do not weigh images by the meta file's faceness score",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=128, help="crops per forward pass")
    add_bulk_arguments(p)


def _outputs(args: argparse.Namespace) -> dict[str, Path]:
    outputs = {}
    if args.out:
        out = Path(args.out)
        outputs |= {k: out / k for k in ("ijb.json", "roc.png", "scores.npy")}
    if args.save_features:
        if args.features:
            raise ValueError(
                "--save-features writes the features computed from --checkpoint; with "
                "--features they exist already"
            )
        if not args.save_features.endswith(".npy"):
            raise ValueError(f"--save-features {args.save_features!r}: the features are an .npy")
        outputs["features"] = Path(args.save_features)
    return outputs


def load_features(path: str, count: int, *, flip: bool, names_file: str):
    """Image features from ``--features``: an ``(N, D)`` .npy, or ijb_evals.py's .npz with the
    embeddings of the crops (``embs``) and of the mirrored crops (``embs_f``), summed unless
    ``flip`` is off. Row count checked against the meta file."""
    import numpy as np

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"features file {path!r} does not exist")
    try:
        data = np.load(file, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path!r} is not a NumPy .npy / .npz file ({e})") from None
    if hasattr(data, "files"):
        if "embs" not in data:
            raise ValueError(
                f"{path!r} holds {sorted(data.files)}: an .npz of features needs 'embs' (and "
                "'embs_f', the mirrored crops), as ijb_evals.py writes it; or give an .npy"
            )
        features = data["embs"]
        if flip:
            if "embs_f" not in data or not len(data["embs_f"]):
                raise ValueError(
                    f"{path!r} has no 'embs_f' (the mirrored crops' embeddings): pass "
                    "--no-flip to use 'embs' alone"
                )
            features = features + data["embs_f"]
    else:
        if not flip:
            raise ValueError(
                f"--no-flip: the features of {path!r} are used as they are (an .npy holds one "
                "feature per image); compute them without flipping instead"
            )
        features = data
    if features.ndim != 2 or len(features) != count:
        raise ValueError(
            f"{path!r} holds features of shape {features.shape}, but {names_file} lists {count} "
            "images: give one row per image, in that file's order"
        )
    return features


def _parts(args: argparse.Namespace) -> Path | None:
    """Where the embedding pass keeps its parts: beside --save-features, else in --out (a run
    without either cannot be resumed)."""
    from .predict import parts_folder

    if args.save_features:
        return parts_folder(Path(args.save_features), file=True)
    return parts_folder(Path(args.out)) if args.out else None


def _embed(args: argparse.Namespace, meta, device):
    """Features of every image from the checkpoint on the bulk path (workers, parts, resume,
    torchrun); unreadable images named by the bulk path and counted. None on ranks other than
    0 of a torchrun launch."""
    from resvision.tasks.engine.bulk import file_digest
    from resvision.tasks.engine.checkpoint import resolve_checkpoint
    from resvision.tasks.face.ijb import embed_aligned
    from resvision.tasks.face.inference import Embedder

    embedder = Embedder.from_checkpoint(args.checkpoint, device=device)
    t0 = time.perf_counter()
    embedded = embed_aligned(
        embedder,
        meta.image_paths(),
        meta.landmarks,
        names=meta.names,
        flip=not args.no_flip,
        batch_size=args.batch_size,
        workers=args.workers,
        parts=_parts(args),
        resume=args.resume,
        strict=args.strict,
        overwrite=args.overwrite,
        depends_on={
            "checkpoint": file_digest(resolve_checkpoint(args.checkpoint)),
            "device": device.type,
            "target": args.target,
        },
    )
    if embedded is None:
        return None
    features, skipped = embedded
    took = time.perf_counter() - t0
    done = len(meta) - len(skipped)
    note = f", {plural(len(skipped), 'unreadable image')} skipped" if skipped else ""
    print(
        f"embedded {plural(done, 'image')}{note} in {took:.1f} s ({done / max(took, 1e-9):.1f} "
        f"images/s, {'flip' if not args.no_flip else 'no flip'})"
    )
    return features, len(skipped)


def _print(result) -> None:
    from resvision.tasks.engine.table import format_table
    from resvision.tasks.face.ijb import FPIRS, RANKS, tar_key, tpir_key

    m, c = result.metrics, result.summary()["counts"]
    fars = list(result.points)
    print(
        f"\n{result.target} 1:1 verification: {c['templates']:,} templates, {c['pairs']:,} pairs "
        f"({c['genuine_pairs']:,} genuine), {c['images_used']:,} of {c['images']:,} images"
    )
    rows = [["TAR %", *[100 * m[tar_key(f)] for f in fars], 100 * m["AUC"]]]
    print(format_table(["FAR", *[str(f) for f in fars], "AUC %"], rows, floatfmt=".2f"))
    if "one_to_n_not_computed" in result.settings:
        print(f"\n1:N not computed: {result.settings['one_to_n_not_computed']}")
    if result.galleries:
        names = " and ".join(g.name for g in result.galleries)
        print(
            f"\n{result.target} 1:N identification ({names} as separate open-set galleries, "
            f"averaged; {result.galleries[0].mated + result.galleries[0].non_mated:,} probe "
            "templates)"
        )
        headers = [*[tpir_key(f) for f in FPIRS], *[f"rank-{r}" for r in RANKS]]
        values = [100 * m[tpir_key(f)] for f in FPIRS] + [100 * m[f"rank{r}"] for r in RANKS]
        print(format_table(["%", *headers], [["", *values]], floatfmt=".2f"))


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from resvision.datasets.face.ijb import meta_paths, read_ijb_meta
    from resvision.tasks.engine import distributed as D
    from resvision.tasks.engine.files import atomic_open, atomic_write_text
    from resvision.tasks.face.ijb import evaluate_ijb, save_ijb_roc_png

    outputs = _outputs(args)
    if args.features and not Path(args.features).is_file():
        raise FileNotFoundError(f"features file {args.features!r} does not exist")
    parts = None if args.features else _parts(args)
    if args.resume and parts is None:
        raise ValueError(
            "--resume continues an embedding pass from its parts: give --checkpoint and the "
            "--save-features FILE or --out DIR of the stopped run"
        )
    root = Path(args.root)
    device = bulk_device(args) if args.checkpoint else None  # joins a torchrun launch
    main = D.current().is_main
    t0 = time.perf_counter()
    meta = read_ijb_meta(root, args.target)
    check_bulk_outputs(
        args,
        len(meta),
        list(outputs.values()),
        parts,
        inputs=[Path(args.features)] if args.features else [],
        input_folders=[root] if root.is_dir() else [],
    )
    galleries = " / ".join(g.name for g in meta.galleries)
    if main:
        print(
            f"{args.target}: {plural(len(meta), 'image')}, "
            f"{plural(len(meta.labels), 'template pair')}, "
            f"{f'1:N galleries {galleries}' if galleries else 'no 1:N files (1:1 only)'}"
            f" (meta read in {time.perf_counter() - t0:.1f} s)"
        )
    names_file = str(meta_paths(root, args.target)["name_5pts_score"])
    if args.features:
        features = load_features(
            args.features, len(meta), flip=not args.no_flip, names_file=names_file
        )
        missing = int((~np.isfinite(features).all(1)).sum())
        if missing:
            print(f"{plural(missing, 'image')} without a feature (NaN rows) left out")
    else:
        embedded = _embed(args, meta, device)
        if embedded is None:  # another rank of a torchrun launch: rank 0 evaluates
            return 0
        features, missing = embedded
        if "features" in outputs:
            with atomic_open(outputs["features"]) as f:
                np.save(f, features)
            print(f"image features -> {outputs['features']}")
    if missing == len(meta):
        print("no image could be read: nothing to evaluate")
        return 1
    print(
        f"pooling {plural(len(meta) - missing, 'image')} into templates, scoring "
        f"{len(meta.labels):,} pairs{' and the 1:N galleries' if meta.galleries else ''} ...",
        flush=True,
    )
    t0 = time.perf_counter()
    result = evaluate_ijb(
        meta,
        features,
        normalize=args.no_norm,
        detector_score=not args.no_detector_score,
    )
    from_npy = args.features and not args.features.endswith(".npz")
    result.settings["flip"] = "as in the features file" if from_npy else not args.no_flip
    result.settings["source"] = args.features or args.checkpoint
    _print(result)
    print(f"(protocol computed in {time.perf_counter() - t0:.1f} s)")
    if args.out:
        atomic_write_text(outputs["ijb.json"], json.dumps(result.summary(), indent=1))
        save_ijb_roc_png(result, outputs["roc.png"])
        with atomic_open(outputs["scores.npy"]) as f:
            np.save(f, result.scores)
        print(f"ijb.json, roc.png, scores.npy -> {args.out}")
    return 0


IJB = Command(
    "IJB-B / IJB-C: TAR@FAR (1:1) and TPIR@FPIR, rank-N (1:N), as InsightFace reports them",
    _arguments,
    run,
    description="IJB-B / IJB-C evaluation on InsightFace's layout (ROOT/meta, ROOT/loose_crop): "
    "each image aligned with norm_crop from its five landmarks and embedded (flip-summed), "
    "pooled into templates (media averaged, then summed, then normalized), 1:1 TAR at FAR "
    "1e-6..1e-1 as arcface_torch's eval_ijbc.py reads its ROC, and 1:N (when the gallery and "
    "probe files exist) as ijb_evals.py: G1 / G2 scored as separate open-set galleries, "
    "averaged.",
)
