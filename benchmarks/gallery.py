"""Face galleries at scale: open time, search against exact search, add cost, clustering.

    resvision benchmark gallery                           # 100k faces (minutes on 2 cores)
    resvision benchmark gallery --faces 1000000           # the issue's size (about 30 min)
    resvision benchmark gallery --face-run runs/demo/face # + the built-in synthetic identities

The faces are generated with the identity structure of real embeddings
(:mod:`resvision.datasets.face.embeddings`: people with a power-law spread of faces, faces
scattered around their person with log-normal quality, look-alike groups); the figures of the
generated set (same- and different-person cosines, the thresholds at FAR 1e-3..1e-5) are
printed first. Queries are further faces drawn the same way: most of people in the gallery
(mated), some of people it has never seen.

1. **Build**: one atomic import of every face in batches of 100,000 (the gallery trains and
   fills its index at the end), then its size on disk.
2. **Open**: ``Gallery.open`` + ``len`` in a fresh process (its resident memory afterwards:
   the files are mapped, not read), then the first search.
3. **Search** against exact search (``faiss.knn`` over every face in memory, what ``face
   search`` does with an .npz): recall@1 of mated queries (the exact top face found), of all
   queries, the open-set decision (the same person, or unknown at the threshold where 1% of
   non-mated queries match someone: FPIR 1%) and the speed-up, at the gallery's own
   ``nprobe`` and at half and twice it.
4. **Add**: ``--adds`` updates of 1,000 new faces each (SQLite commit + fsync, the delta
   joining the index when it passes 1%): per update and per face.
5. **Cluster**: the gallery's k-nearest-neighbour graph (its index), then threshold linkage
   and Chinese whispers at the FAR thresholds: BCubed and pairwise F against the true people,
   clusters, time.
6. With ``--face-run RUN``: the same two methods on embeddings of the built-in synthetic
   identities (rendered faces of people the run never saw, a power-law number of photos each)
   by that face model, exact graph, thresholds from their own verification pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from resvision.datasets.face.embeddings import EmbeddingModel, synthetic_embeddings
from resvision.tasks.engine.table import format_table
from resvision.tasks.face.clustering import chinese_whispers, cluster_scores, threshold_linkage
from resvision.tasks.face.gallery import Gallery

FARS = (1e-3, 1e-4, 1e-5, 1e-6)


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def load() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def say(text: str) -> None:
    print(text, flush=True)


def pair_stats(x: np.ndarray, people: np.ndarray, seed: int = 1, fars=FARS) -> dict:
    """Same- and different-person cosines of seeded pairs, and the thresholds at FARS."""
    rng = np.random.default_rng(seed)
    n = len(x)
    diff = []
    for _ in range(50):  # 10M pairs (FAR 1e-6: the 10th highest), in pieces of 200k
        a, b = rng.integers(0, n, 200_000), rng.integers(0, n, 200_000)
        keep = people[a] != people[b]
        diff.append(np.einsum("nd,nd->n", x[a[keep]], x[b[keep]]))
    diff = np.concatenate(diff)
    order = np.argsort(people, kind="stable")
    sorted_people = people[order]
    adjacent = np.flatnonzero(sorted_people[1:] == sorted_people[:-1])
    adjacent = adjacent[rng.permutation(len(adjacent))[:200_000]]
    same = np.einsum("nd,nd->n", x[order[adjacent]], x[order[adjacent + 1]])
    out = {
        "same": (float(same.mean()), float(same.std()), float(np.percentile(same, 1))),
        "diff": (float(diff.mean()), float(diff.std())),
    }
    for far in sorted(set(FARS) | set(fars)):
        t = float(np.quantile(diff, 1 - far))
        out[far] = (t, float((same > t).mean()))
    return out


def describe_set(x: np.ndarray, people: np.ndarray, stats: dict) -> None:
    sizes = np.bincount(people)
    sizes = sizes[sizes > 0]
    s, d = stats["same"], stats["diff"]
    say(
        f"{len(x):,} faces of {len(sizes):,} people ({x.shape[1]}-d): faces per person mean "
        f"{sizes.mean():.1f}, median {np.median(sizes):.0f}, max {sizes.max()}, "
        f"{100 * (sizes == 1).mean():.0f}% seen once; same-person cosine {s[0]:.3f} +- "
        f"{s[1]:.3f} (1% below {s[2]:.3f}), different-person {d[0]:.3f} +- {d[1]:.3f}; "
        + ", ".join(f"FAR {f:g}: cosine {stats[f][0]:.3f}, TAR {stats[f][1]:.3f}" for f in FARS)
    )


def build(folder: Path, x: np.ndarray, names: list[str], labels: np.ndarray) -> float:
    t0 = time.perf_counter()
    g = Gallery.create(folder, x.shape[1])
    with g.transaction() as t:
        for start in range(0, len(x), 100_000):
            stop = start + 100_000
            t.add(x[start:stop], names[start:stop], labels[start:stop])
    took = time.perf_counter() - t0
    g.close()
    return took


OPEN = """
import json, sys, time
t0 = time.perf_counter()
from resvision.tasks.face.gallery import Gallery
t1 = time.perf_counter()
g = Gallery.open(sys.argv[1])
n = len(g)
t2 = time.perf_counter()
rss = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")][0]
print(json.dumps({"import_s": t1 - t0, "open_s": t2 - t1, "faces": n, "rss_mib": rss / 1024}))
"""


def open_time(folder: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", OPEN, str(folder)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_search(g: Gallery, x: np.ndarray, q: np.ndarray, mated: np.ndarray) -> list[list]:
    import faiss

    t0 = time.perf_counter()
    exact_s, exact_i = faiss.knn(q, x, 10, faiss.METRIC_INNER_PRODUCT)
    exact_t = time.perf_counter() - t0
    names = g.names
    threshold = float(np.quantile(exact_s[~mated, 0], 0.99)) if (~mated).any() else 1.0
    labels = g.labels
    truth = np.where(exact_s[:, 0] >= threshold, labels[exact_i[:, 0]], "")
    info = g.info()
    rows = [["exact (faiss.knn, every face)", "-", exact_t, 1.0, 1.0, 1.0, 1.0]]
    plan = info["search"]
    plan_nprobe = int(plan.split("nprobe ")[1].split(",")[0]) if "nprobe" in plan else 0
    index = {n: i for i, n in enumerate(names)}
    for nprobe in [plan_nprobe // 2, plan_nprobe, plan_nprobe * 2] if plan_nprobe else [None]:
        t0 = time.perf_counter()
        scores, found = g.search(q, 10, nprobe=nprobe)
        took = time.perf_counter() - t0
        hit = found[:, 0] == names[exact_i[:, 0]]
        best = np.array([labels[index[n]] if n else "" for n in found[:, 0]])
        decided = np.where(scores[:, 0] >= threshold, best, "")
        rows.append(
            [
                f"gallery ({info['search'].split(':')[0]})",
                nprobe or "-",
                took,
                exact_t / took,
                float(hit[mated].mean()),
                float(hit.mean()),
                float((decided == truth).mean()),
            ]
        )
    say(
        f"\nSearch: {len(q):,} queries ({int(mated.sum()):,} of people in the gallery), top 10; "
        f"open-set threshold {threshold:.3f} (1% of non-mated queries above it)\n"
    )
    say(
        format_table(
            (
                "search",
                "nprobe",
                "seconds",
                "speed-up",
                "recall@1 mated",
                "recall@1 all",
                "same decision",
            ),
            rows,
            floatfmt=".4f",
        )
    )
    return rows


def bench_adds(g: Gallery, adds: int, dim: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    times = []
    for i in range(adds):
        v = rng.standard_normal((1000, dim)).astype(np.float32)
        t0 = time.perf_counter()
        g.add(v, [f"added/{i}/{j}" for j in range(1000)])
        times.append(time.perf_counter() - t0)
    t = np.array(times)
    say(
        f"\nAdd: {adds} updates of 1,000 faces: median {np.median(t):.3f} s, mean "
        f"{t.mean():.3f} s, slowest {t.max():.3f} s (the delta joining the index), "
        f"{1000 * t.mean() / 1000:.2f} ms per face; index now {g.info()['search']}"
    )
    g.remove(labels=[""])  # the added faces have no label: the gallery is as generated again


def bench_cluster(
    scores: np.ndarray, neighbours: np.ndarray, people: np.ndarray, thresholds: dict, graph_s: float
) -> list[list]:
    rows = []
    for name, t in thresholds.items():
        for method, run in (
            ("threshold", threshold_linkage),
            ("chinese-whispers", chinese_whispers),
        ):
            t0 = time.perf_counter()
            ids = run(scores, neighbours, t)
            took = time.perf_counter() - t0
            r = cluster_scores(ids, people)
            rows.append(
                [
                    method,
                    f"{name} ({t:.3f})",
                    r["bcubed_f"],
                    r["bcubed_precision"],
                    r["bcubed_recall"],
                    r["pairwise_f"],
                    r["clusters"],
                    took,
                    graph_s + took,
                ]
            )
    say(
        format_table(
            (
                "method",
                "threshold",
                "BCubed F",
                "precision",
                "recall",
                "pairwise F",
                "clusters",
                "seconds",
                "with graph",
            ),
            rows,
            floatfmt=".4f",
        )
    )
    best = {m: max(r[2] for r in rows if r[0] == m) for m in ("threshold", "chinese-whispers")}
    say(
        f"best BCubed F: threshold linkage {best['threshold']:.4f}, Chinese whispers "
        f"{best['chinese-whispers']:.4f}"
    )
    return rows


def synthetic_identities(run: str, people: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of rendered synthetic identities the run never saw (its held-out seed), a
    power-law number of photos each (1..40), by the run's face model."""
    from resvision.datasets.face import SyntheticFaces
    from resvision.datasets.face.embeddings import people_sizes
    from resvision.tasks.engine.config import load_yaml
    from resvision.tasks.face.config import FaceConfig
    from resvision.tasks.face.inference import Embedder

    cfg = load_yaml(FaceConfig, Path(run) / "config.yaml")
    emb = Embedder.from_checkpoint(run, device="cpu")
    rng = np.random.default_rng(seed)
    sizes = people_sizes(people * 4, rng, 2.0, 40)[:people]
    faces = SyntheticFaces(
        people, 40, image_size=cfg.data.image_size, seed=cfg.data.synthetic_seed + 1
    )
    images, who = [], []
    for person, count in enumerate(sizes):
        for shot in range(int(count)):
            images.append(faces.render(person, shot))
            who.append(person)
    return emb.embed(images), np.array(who)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="resvision benchmark gallery",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--faces", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--k", type=int, default=32, help="neighbours per face for clustering")
    p.add_argument("--adds", type=int, default=15, help="updates of 1,000 faces")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folder", default=None, help="where to build (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the gallery folder")
    p.add_argument("--skip", nargs="*", default=[], choices=("search", "add", "cluster"))
    p.add_argument("--face-run", default=None, help="a face run: cluster synthetic identities")
    p.add_argument("--identities", type=int, default=300, help="with --face-run: people")
    p.add_argument(
        "--fars",
        nargs="+",
        type=float,
        default=list(FARS),
        help="cluster at these FARs' thresholds",
    )
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)

    say(f"machine: {os.cpu_count()} CPUs, load {load()} (1/5/15 min)")
    t0 = time.perf_counter()
    x, people = synthetic_embeddings(
        args.faces + args.queries, seed=args.seed, model=EmbeddingModel(dim=args.dim)
    )
    q, q_people = x[args.faces :], people[args.faces :]
    x, people = x[: args.faces], people[: args.faces]
    stats = pair_stats(x, people, fars=args.fars)
    say(f"generated in {time.perf_counter() - t0:.0f} s")
    describe_set(x, people, stats)
    figures: dict = {
        "faces": args.faces,
        "dim": args.dim,
        "stats": {str(k): v for k, v in stats.items()},
    }

    folder = Path(args.folder) if args.folder else Path(tempfile.mkdtemp(prefix="gallery-"))
    if args.folder and folder.exists():
        raise FileExistsError(f"--folder {folder} exists: give a new one")
    try:
        names = [f"p{v}/{i}" for i, v in enumerate(people)]
        labels = np.array([f"p{v}" for v in people])
        took = build(folder, x, names, labels)
        size = sum(f.stat().st_size for f in folder.iterdir())
        g = Gallery.open(folder)
        say(
            f"\nBuild: {args.faces:,} faces imported in one update in {took:.0f} s (index "
            f"included: {g.info()['search']}); {size / 1e9:.2f} GB on disk; load {load()}"
        )
        opened = open_time(folder)
        t1 = time.perf_counter()
        g2 = Gallery.open(folder)
        g2.search(q[:1], 5)
        first = time.perf_counter() - t1
        g2.close()
        say(
            f"Open: {1000 * opened['open_s']:.0f} ms (Gallery.open + len, fresh process, "
            f"{opened['rss_mib']:.0f} MiB resident after, {1000 * opened['import_s']:.0f} ms of "
            f"imports before); open + first search {1000 * first:.0f} ms in this process"
        )
        figures |= {"build_s": took, "bytes": size, "open": opened, "first_search_s": first}
        if "search" not in args.skip:
            mated = np.isin(q_people, people)
            figures["search"] = bench_search(g, x, q, mated)
        if "add" not in args.skip:
            bench_adds(g, args.adds, args.dim, args.seed + 1)
        if "cluster" not in args.skip:
            t2 = time.perf_counter()
            scores, neighbours = g.knn(args.k)
            graph_s = time.perf_counter() - t2
            say(
                f"\nCluster: {args.faces:,} faces, k={args.k} graph from the gallery's index in "
                f"{graph_s:.0f} s; load {load()}\n"
            )
            thresholds = {f"FAR {f:g}": stats[f][0] for f in args.fars}
            figures["cluster"] = bench_cluster(scores, neighbours, people, thresholds, graph_s)
        g.close()
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    if args.face_run:
        from resvision.tasks.face.clustering import exact_knn

        v, who = synthetic_identities(args.face_run, args.identities, args.seed)
        s = pair_stats(v, who)
        say(f"\nBuilt-in synthetic identities embedded by {args.face_run}:")
        describe_set(v, who, s)
        scores, neighbours = exact_knn(v, args.k)
        figures["synthetic"] = bench_cluster(
            scores, neighbours, who, {f"FAR {f:g}": s[f][0] for f in FARS[:3]}, 0.0
        )
    say(f"\npeak resident memory {peak_gib():.2f} GiB; load {load()}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1, default=str))
    return 0
