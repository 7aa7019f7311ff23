"""Search over stored embeddings: exact below a size, an IVF index with fast-scan product
quantization and exact re-scoring above it (faiss).

Measured at 1M 512-d faces on the 2-core CPU (``BENCHMARKS.md``): exact search reads every
vector (matrix products, 24 s per 1,000 queries); IVF-Flat and HNSW are memory-bound on faces
(two faces of one person are 55 degrees apart, so many lists must be probed) and reached
recall@1 0.99 only at 2-3x the speed of exact search. IVF with 4-bit fast-scan PQ codes (64
bytes per 512-d face instead of 2 KB) scans 30x more candidates per second; the best
``rerank`` of them are then re-scored exactly from the stored vectors, so the scores returned
are exact cosines. The index holds codes only (about 70 MB at 1M faces): rewriting it after an
add is cheap, and the vectors are not stored twice.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

EXACT_BELOW = 50_000  # faces: below this, exact search (an index would save under a second)


@dataclass(frozen=True)
class IndexPlan:
    """How a gallery is searched: ``exact``, or ``ivf-pq`` with its parameters (recorded in the
    gallery; every one can be overridden)."""

    kind: str = "exact"  # "exact" or "ivf-pq"
    nlist: int = 0  # IVF lists (k-means centroids)
    pq: int = 0  # PQ sub-quantizers, 4 bits each (fast scan): 2 codes per byte
    nprobe: int = 0  # lists searched per query
    rerank: int = 0  # candidates re-scored exactly from the stored vectors
    trained_for: int = 0  # faces when the index was trained (retrained past 4x that)

    OVERRIDABLE = ("nlist", "pq", "nprobe", "rerank")

    @classmethod
    def for_size(cls, n: int, dim: int, *, exact_below: int = EXACT_BELOW) -> IndexPlan:
        """The plan for ``n`` faces of ``dim`` dimensions: exact below ``exact_below`` (or when
        ``dim`` is not a multiple of 4); above, ``nlist`` = the power of two nearest
        ``4 sqrt(n)`` (4096 at 1M; at most ``n / 16``, so that every list is trained on
        faces) and the rest from :meth:`ivf`."""
        if n < exact_below or dim % 4:
            return cls()
        nlist = 2 ** round(math.log2(4 * math.sqrt(n)))
        nlist = int(min(max(nlist, 16), 65536, max(16, 2 ** int(math.log2(max(n // 16, 1))))))
        return cls.ivf(nlist, dim, trained_for=n)

    @classmethod
    def ivf(cls, nlist: int, dim: int, *, trained_for: int) -> IndexPlan:
        """An IVF-PQ plan with ``nlist`` lists: ``nprobe`` = ``nlist / 16`` (at least 16), 4
        dimensions per PQ code, 100 candidates re-scored: the settings that reached recall@1
        >= 0.99 of exact search on known people at 100k-1M faces (``resvision benchmark
        gallery``)."""
        return cls(
            "ivf-pq",
            nlist=nlist,
            pq=dim // 4,
            nprobe=min(nlist, max(16, nlist // 16)),
            rerank=100,
            trained_for=trained_for,
        )

    def with_overrides(self, **values: Any) -> IndexPlan:
        """This plan with the given parameters replaced (``None`` values ignored); others
        than :attr:`OVERRIDABLE` raise ``ValueError`` naming the valid ones."""
        values = {k: v for k, v in values.items() if v is not None}
        unknown = sorted(set(values) - set(self.OVERRIDABLE))
        if unknown:
            raise ValueError(
                f"unknown index parameters {unknown}: choose from {list(self.OVERRIDABLE)}"
            )
        bad = {k: v for k, v in values.items() if int(v) < 1}
        if bad:
            raise ValueError(f"index parameters must be positive integers, got {bad}")
        if self.kind == "exact":
            return self
        return replace(self, **{k: int(v) for k, v in values.items()})

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> IndexPlan:
        return cls(**json.loads(text))

    def describe(self) -> str:
        if self.kind == "exact":
            return "exact (every face compared)"
        return (
            f"IVF{self.nlist},PQ{self.pq}x4fs: nprobe {self.nprobe}, {self.rerank} candidates "
            f"re-scored exactly (trained on {self.trained_for} faces)"
        )


def chunks(n: int, size: int = 65536):
    for start in range(0, n, size):
        yield start, min(n, start + size)


def build_index(
    vectors: np.ndarray, plan: IndexPlan, *, seed: int = 0, progress: Callable | None = None
):
    """A trained faiss ``IVF{nlist},PQ{pq}x4fs`` index (inner product) holding ``vectors``
    (rows 0..N-1 get ids 0..N-1): k-means on a seeded sample of ``40 nlist`` rows (10
    iterations), then every row added in chunks."""
    import faiss

    dim = vectors.shape[1]
    index = faiss.index_factory(dim, f"IVF{plan.nlist},PQ{plan.pq}x4fs", faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    ivf.cp.niter = 10
    ivf.cp.min_points_per_centroid = 5  # small galleries: no warning above 5 faces per list
    ivf.pq.cp.min_points_per_centroid = 1  # (4-bit codes: 16 centroids per sub-quantizer)
    ivf.cp.seed = seed
    n = len(vectors)
    sample = np.sort(np.random.default_rng(seed).choice(n, min(n, 40 * plan.nlist), replace=False))
    index.train(np.ascontiguousarray(vectors[sample], np.float32))
    extend_index(index, vectors, 0, n, progress=progress)
    return index


def extend_index(index, vectors: np.ndarray, start: int, stop: int, *, progress=None) -> None:
    """Add rows ``start..stop-1`` (the index must hold exactly ``start`` rows)."""
    if index.ntotal != start:
        raise AssertionError(f"the index holds {index.ntotal} rows, not {start}")
    parts = list(chunks(stop - start))
    for a, b in progress(parts, total=len(parts), desc="indexing") if progress else parts:
        index.add(np.ascontiguousarray(vectors[start + a : start + b], np.float32))


def write_index(index, path: Path) -> None:
    """Write ``index`` to ``path`` and flush it to disk (the caller names it only afterwards)."""
    import os

    import faiss

    faiss.write_index(index, str(path))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_index(path: Path, *, writable: bool = False):
    """The index at ``path``: memory-mapped (nothing read until searched), or loaded whole to
    be extended."""
    import faiss

    mmap = getattr(faiss, "IO_FLAG_MMAP_IFC", 0)  # faiss builds without it read the file
    return faiss.read_index(str(path), 0 if writable else mmap)


def merge_results(parts: list[tuple[np.ndarray, np.ndarray]], k: int):
    """The best ``k`` of several ``(scores, rows)`` result sets of the same queries (ties: the
    smaller row first), ``-inf`` / ``-1`` past the last."""
    scores = np.concatenate([s for s, _ in parts], 1)
    rows = np.concatenate([r for _, r in parts], 1)
    scores = np.where(rows < 0, -np.inf, scores).astype(np.float32)
    order = np.lexsort((np.where(rows < 0, np.iinfo(np.int64).max, rows), -scores), axis=1)
    order = order[:, :k]
    scores, rows = np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)
    if scores.shape[1] < k:
        pad = k - scores.shape[1]
        scores = np.concatenate([scores, np.full((len(scores), pad), -np.inf, np.float32)], 1)
        rows = np.concatenate([rows, np.full((len(rows), pad), -1, np.int64)], 1)
    return scores, rows


def exact_search(
    vectors: np.ndarray, queries: np.ndarray, k: int, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product search of ``queries (Q, D)`` over ``vectors`` (all rows, or only
    ``rows``, sorted), in chunks so that a memory-mapped file is read piece by piece:
    ``(scores, rows)``, each ``(Q, k)``, best first."""
    import faiss

    q = np.ascontiguousarray(queries, np.float32)
    heap = faiss.ResultHeap(len(q), k, keep_max=True)
    total = len(vectors) if rows is None else len(rows)
    for a, b in chunks(total):
        block = vectors[a:b] if rows is None else vectors[rows[a:b]]
        block = np.ascontiguousarray(block, np.float32)
        s, i = faiss.knn(q, block, min(k, len(block)), faiss.METRIC_INNER_PRODUCT)
        i = np.where(i < 0, -1, (i + a) if rows is None else rows[a:b][np.maximum(i, 0)])
        heap.add_result(s, i)
    heap.finalize()
    return merge_results([(heap.D, heap.I)], k)


def rescore(
    vectors: np.ndarray, queries: np.ndarray, rows: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosines of candidate ``rows (Q, R)`` (``-1`` = none) -> the best ``k``."""
    scores = np.full(rows.shape, -np.inf, np.float32)
    for a in range(0, len(rows), 64):
        r = rows[a : a + 64]
        safe = np.maximum(r, 0)
        picked = np.asarray(vectors[safe.ravel()], np.float32).reshape(*r.shape, -1)
        s = np.matmul(picked, queries[a : a + 64, :, None])[..., 0]
        scores[a : a + 64] = np.where(r < 0, -np.inf, s)
    return merge_results([(scores, rows)], k)


def index_search(
    index,
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int,
    plan: IndexPlan,
    *,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Candidates from the IVF-PQ ``index`` (``plan.nprobe`` lists, the best
    ``max(k, plan.rerank)`` by PQ score), re-scored exactly -> the best ``k``. ``allowed`` is
    a packed bitmap over the index's rows (``np.packbits(..., bitorder="little")``) of the
    rows that may be returned."""
    import faiss

    q = np.ascontiguousarray(queries, np.float32)
    params = faiss.SearchParametersIVF()
    params.nprobe = int(min(plan.nprobe, plan.nlist))
    if allowed is not None:
        selector = faiss.IDSelectorBitmap(index.ntotal, faiss.swig_ptr(allowed))
        params.sel = selector
    _, rows = index.search(q, int(max(k, plan.rerank)), params=params)
    return rescore(vectors, q, rows.astype(np.int64), k)
