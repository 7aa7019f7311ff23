"""Clustering faces from a k-nearest-neighbour graph, in O(N·k) instead of all pairs.

The graph is two ``(N, k)`` arrays, best first: ``scores`` (cosine) and ``neighbours`` (the
row of each neighbour, ``-1`` where a face has fewer than ``k``), as an index search returns
them with the face itself left out (:func:`exact_knn`, ``Gallery.knn``). Two methods read it:

- :func:`threshold_linkage`: connected components of the links ``cosine > threshold``
  (single linkage; strictly above, as faiss's range search, which ``face cluster`` ran over all
  pairs before). Wherever ``k`` covers every neighbour above the threshold (no face has its
  ``k``-th neighbour still above it: :func:`saturated` counts those that do) this is exactly
  the partition of that all-pairs search. One link joins two people, so in a large
  gallery a few look-alike pairs chain many people into one cluster.
- :func:`chinese_whispers` (Biemann 2006; dlib's face clustering): every face repeatedly
  takes the label that carries the most link weight among its neighbours, so a cluster
  holds together by many links, not by one; two people joined by a single link stay apart.

Both number the clusters by first appearance in the gallery's order.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Method = Literal["threshold", "chinese-whispers"]
METHODS: tuple[str, ...] = ("threshold", "chinese-whispers")


def exact_knn(vectors: np.ndarray, k: int, *, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """The exact ``k`` nearest other rows of every row of ``vectors (N, D)`` (inner product,
    faiss): ``(scores, neighbours)``, each ``(N, k)``, best first, ``-1`` past the last."""
    import faiss

    x = np.ascontiguousarray(vectors, np.float32)
    n = len(x)
    scores = np.full((n, k), -np.inf, np.float32)
    neighbours = np.full((n, k), -1, np.int64)
    if n == 0 or k == 0:
        return scores, neighbours
    for start in range(0, n, chunk):
        q = x[start : start + chunk]
        s, i = faiss.knn(q, x, min(k + 1, n), faiss.METRIC_INNER_PRODUCT)
        s, i = drop_self(s, i, np.arange(start, start + len(q)), k)
        scores[start : start + len(q)], neighbours[start : start + len(q)] = s, i
    return scores, neighbours


def drop_self(
    scores: np.ndarray, neighbours: np.ndarray, rows: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(Q, k + 1)`` results of ``rows`` searched against a set that holds them -> the best
    ``k`` others (the query's own row removed wherever it appears, not only first: an exact
    duplicate may rank before it)."""
    own = neighbours == rows[:, None]
    keep = ~own
    keep[own.sum(1) == 0, -1] = False  # not found (approximate search): drop the last instead
    q = len(rows)
    s = scores[keep].reshape(q, -1)[:, :k]
    i = neighbours[keep].reshape(q, -1)[:, :k]
    if s.shape[1] < k:  # fewer rows than k + 1
        pad = k - s.shape[1]
        s = np.concatenate([s, np.full((q, pad), -np.inf, s.dtype)], 1)
        i = np.concatenate([i, np.full((q, pad), -1, i.dtype)], 1)
    return s, i


def saturated(scores: np.ndarray, neighbours: np.ndarray, threshold: float) -> np.ndarray:
    """Faces whose ``k``-th neighbour is still above ``threshold``: they may have more links
    than the graph holds (raise ``k`` to follow them)."""
    if scores.shape[1] == 0:
        return np.zeros(len(scores), bool)
    return (neighbours[:, -1] >= 0) & (scores[:, -1] > threshold)


def _links(scores: np.ndarray, neighbours: np.ndarray, threshold: float):
    """The undirected graph of the links ``cosine > threshold`` as a symmetric CSR matrix
    whose values are the cosines (the larger where both directions were found)."""
    from scipy import sparse

    n = len(scores)
    ok = (neighbours >= 0) & (scores > threshold)
    index = np.int32 if n < 2**31 else np.int64  # 1M faces x 32 links: half the memory
    rows = np.repeat(np.arange(n, dtype=index), ok.sum(1))
    cols = neighbours[ok].astype(index)
    weights = scores[ok].astype(np.float32)
    off = rows != cols
    rows, cols, weights = rows[off], cols[off], weights[off]
    graph = sparse.coo_matrix((weights, (rows, cols)), shape=(n, n)).tocsr()
    graph.sum_duplicates()
    return graph.maximum(graph.T).tocsr()


def first_appearance(labels: np.ndarray) -> np.ndarray:
    """Renumber ``labels`` so that cluster 0 holds the first face, 1 the first face of
    another cluster, and so on."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return np.zeros(0, np.int64)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def threshold_linkage(scores: np.ndarray, neighbours: np.ndarray, threshold: float) -> np.ndarray:
    """Connected components of the links ``cosine > threshold``: a cluster id per face."""
    from scipy.sparse.csgraph import connected_components

    _, components = connected_components(
        _links(scores, neighbours, threshold), directed=False, return_labels=True
    )
    return first_appearance(components)


def chinese_whispers(
    scores: np.ndarray,
    neighbours: np.ndarray,
    threshold: float,
    *,
    iterations: int = 30,
    blocks: int = 16,
    seed: int = 0,
) -> np.ndarray:
    """Chinese whispers on the links ``cosine > threshold`` weighted by their cosine: a cluster
    id per face.

    Every face starts alone; each pass visits the faces in a random order, in ``blocks``
    groups, and gives every face of a group the label whose links to it weigh the most (ties:
    the smallest label); it stops when a pass changes nothing or after ``iterations`` passes.
    Faces of one group update together (vectorized), which is the one difference from the
    one-face-at-a-time original; with enough groups a face's neighbours are seldom in its own.
    """
    graph = _links(scores, neighbours, threshold)
    n = graph.shape[0]
    labels = np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    degree = np.diff(graph.indptr)
    active = np.flatnonzero(degree > 0)
    for _ in range(iterations):
        changed = 0
        order = rng.permutation(active)
        for group in np.array_split(order, max(1, min(blocks, len(order)))):
            if len(group) == 0:
                continue
            sub = graph[group]
            owner = np.repeat(np.arange(len(group)), np.diff(sub.indptr))
            key = owner * n + labels[sub.indices]
            unique, inverse = np.unique(key, return_inverse=True)
            weight = np.bincount(inverse.reshape(-1), weights=sub.data)
            who = unique // n
            starts = np.flatnonzero(np.r_[True, who[1:] != who[:-1]])
            best = np.maximum.reduceat(weight, starts)
            # the first (smallest) label reaching each face's best weight
            is_best = weight >= np.repeat(best, np.diff(np.r_[starts, len(who)]))
            position = np.where(is_best, np.arange(len(weight)), len(weight))
            first_best = np.minimum.reduceat(position, starts)
            new = unique[first_best] % n
            faces = group[who[first_best]]
            changed += int((labels[faces] != new).sum())
            labels[faces] = new
        if changed == 0:
            break
    return first_appearance(labels)


def cluster_graph(
    scores: np.ndarray,
    neighbours: np.ndarray,
    threshold: float,
    method: str = "threshold",
    *,
    seed: int = 0,
) -> np.ndarray:
    """A cluster id per face of the graph with ``method`` (one of :data:`METHODS`)."""
    if method == "threshold":
        return threshold_linkage(scores, neighbours, threshold)
    if method == "chinese-whispers":
        return chinese_whispers(scores, neighbours, threshold, seed=seed)
    raise ValueError(f"unknown clustering method {method!r}: choose one of {list(METHODS)}")


def cluster_scores(clusters: np.ndarray, people: np.ndarray) -> dict[str, float]:
    """Pairwise and BCubed precision, recall and F of ``clusters`` against the true ``people``
    (one value per face each, any hashable labels), and the numbers of clusters and people.

    Pairwise: over all pairs of faces, precision = pairs in one cluster that are one person /
    pairs in one cluster (1 when no two faces share a cluster), recall = pairs of one person in
    one cluster / pairs of one person (1 when nobody has two faces). BCubed (Bagga & Baldwin
    1998; Amigó et al. 2009): per face, the share of its cluster that is its person
    (precision) and the share of its person that is in its cluster (recall), averaged over
    faces. F is their harmonic mean. Both come from the cluster x person contingency counts in
    O(N log N). (Here rather than in ``evaluation.py``, which imports the training engine.)
    """
    clusters, people = np.asarray(clusters), np.asarray(people)
    if clusters.shape != people.shape or clusters.ndim != 1:
        raise ValueError(
            f"clusters {clusters.shape} and people {people.shape}: give one value per face each"
        )
    n = len(clusters)
    _, c = np.unique(clusters, return_inverse=True)
    _, p = np.unique(people, return_inverse=True)
    c, p = c.reshape(-1), p.reshape(-1)
    cells, counts = np.unique(c * (int(p.max(initial=0)) + 1) + p, return_counts=True)
    cell_cluster = cells // (int(p.max(initial=0)) + 1)
    cell_person = cells % (int(p.max(initial=0)) + 1)
    size_c = np.bincount(c)[cell_cluster]
    size_p = np.bincount(p)[cell_person]

    def pairs(v: np.ndarray) -> float:
        v = v.astype(np.float64)
        return float((v * (v - 1) / 2).sum())

    together = pairs(counts)
    predicted, true = pairs(np.bincount(c)), pairs(np.bincount(p))
    out = {
        "pairwise_precision": together / predicted if predicted else 1.0,
        "pairwise_recall": together / true if true else 1.0,
        "bcubed_precision": float((counts**2 / size_c).sum() / n) if n else 1.0,
        "bcubed_recall": float((counts**2 / size_p).sum() / n) if n else 1.0,
    }
    for kind in ("pairwise", "bcubed"):
        prec, rec = out[f"{kind}_precision"], out[f"{kind}_recall"]
        out[f"{kind}_f"] = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    out["clusters"] = int(c.max(initial=-1) + 1)
    out["people"] = int(p.max(initial=-1) + 1)
    return out
