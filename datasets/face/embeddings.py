"""Synthetic face embeddings with the structure of real ones, for benchmarks and tests of
search and clustering at any size (no model, no images).

Real face embeddings (ArcFace-style, 512-d, unit length) are not uniform noise: each person is
a direction, a person's faces scatter around it (more for poor photos: profile, blur, age),
different people are nearly orthogonal but not quite (look-alikes, shared demographics), and a
photo collection holds a few people many times and most people once or twice. Here:

- **People per face**: sizes from a discrete power law ``P(n) ~ n^-alpha`` on
  ``1..max_faces`` (``alpha`` 2: 60% of people seen once, a mean of about 5 faces, the largest
  near ``max_faces``), drawn until ``num_faces`` faces; faces in random order.
- **People**: directions from an anisotropic Gaussian (axis ``i`` scaled by
  ``(1 + i)^-anisotropy``), each mixed with one of ``groups`` shared directions
  (weight ``sqrt(group_weight)``): look-alike groups.
- **Faces**: ``normalize(person + s * noise / sqrt(dim))`` with ``s`` log-normal
  (``noise`` times ``exp(quality_spread * N(0, 1))``): most faces close to their person,
  some far (hard photos).

The defaults give, at 512-d: same-person cosine 0.57 +- 0.16 (1% below 0.14), different-person
cosine 0.00 +- 0.07, a FAR=1e-4 threshold near 0.31 with TAR 0.94 there: the shape of a
ResNet-100 ArcFace model on mixed-quality photos (genuine mean 0.5-0.7, impostor std
0.06-0.08, TAR@FAR=1e-4 0.9-0.97 on IJB-C). ``resvision benchmark gallery`` prints the
figures of the set it generates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EmbeddingModel:
    """The shape of the generated embeddings (see the module's notes)."""

    dim: int = 512
    alpha: float = 2.0  # power law of faces per person
    max_faces: int = 1000  # the most faces one person can have
    groups: int = 64  # look-alike groups
    group_weight: float = 0.1  # share of a person's direction from its group
    anisotropy: float = 0.4  # axis i scaled by (1 + i)^-anisotropy
    noise: float = 0.8  # median distance of a face from its person (relative)
    quality_spread: float = 0.5  # log-normal spread of that distance


def people_sizes(num_faces: int, rng: np.random.Generator, alpha: float, max_faces: int):
    """Faces per person, power-law distributed, summing to exactly ``num_faces``."""
    n = np.arange(1, max_faces + 1)
    p = n.astype(np.float64) ** -alpha
    p /= p.sum()
    sizes: list[np.ndarray] = []
    total = 0
    while total < num_faces:
        s = rng.choice(n, size=max(1024, (num_faces - total) // 2), p=p)
        s = s[: int(np.searchsorted(np.cumsum(s), num_faces - total)) + 1]
        s[-1] -= max(0, int(s.sum()) - (num_faces - total))
        sizes.append(s)
        total += int(s.sum())
    return np.concatenate(sizes)


def synthetic_embeddings(
    num_faces: int, *, seed: int = 0, model: EmbeddingModel = EmbeddingModel()
) -> tuple[np.ndarray, np.ndarray]:
    """``(embeddings (N, dim) float32 unit rows, people (N,) int64)``, deterministic by seed."""
    rng = np.random.default_rng(seed)
    dim = model.dim
    sizes = people_sizes(num_faces, rng, model.alpha, model.max_faces)
    scale = (1.0 + np.arange(dim)) ** -model.anisotropy
    scale = (scale / np.sqrt((scale**2).mean())).astype(np.float32)

    def directions(count: int) -> np.ndarray:
        d = rng.standard_normal((count, dim), dtype=np.float32) * scale
        return d / np.linalg.norm(d, axis=1, keepdims=True)

    groups = directions(model.groups)
    own = directions(len(sizes))
    w = model.group_weight
    centres = np.sqrt(w) * groups[rng.integers(0, model.groups, len(sizes))] + np.sqrt(1 - w) * own
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    people = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    out = np.empty((num_faces, dim), np.float32)
    for a in range(0, num_faces, 65536):
        who = people[a : a + 65536]
        s = model.noise * np.exp(model.quality_spread * rng.standard_normal(len(who)))
        noise = rng.standard_normal((len(who), dim), dtype=np.float32) / np.sqrt(dim)
        x = centres[who] + s.astype(np.float32)[:, None] * noise
        out[a : a + 65536] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out, people.astype(np.int64)
