"""``face cluster`` as it was before the kNN graph (resvision 0.1's ``inference.cluster``): an
exact all-pairs range search, then a union-find. The parity reference of threshold linkage."""

from __future__ import annotations

import numpy as np


def reference_cluster(embeddings: np.ndarray, threshold: float) -> np.ndarray:
    import faiss

    x = np.ascontiguousarray(embeddings, np.float32)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    lims, _, neighbours = index.range_search(x, float(threshold))
    parent = np.arange(len(x))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(x)):
        for j in neighbours[lims[i] : lims[i + 1]]:
            a, b = find(i), find(int(j))
            if a != b:
                parent[max(a, b)] = min(a, b)
    roots = np.array([find(i) for i in range(len(x))])
    _, ids = np.unique(roots, return_inverse=True)
    order = {}
    return np.array([order.setdefault(r, len(order)) for r in ids])
