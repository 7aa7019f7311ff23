"""What every gallery shares: the API, the checks on what is added, search results by name,
clustering from the k-nearest-neighbour graph, and provenance (which model made the faces).

A gallery is opened by its path: a folder for the embedded gallery (:mod:`.local`, the
default: no server), ``milvus://HOST:PORT/COLLECTION`` for a Milvus server and
``milvus:PATH.db/COLLECTION`` for milvus-lite (:mod:`.milvus`). Each face is a row: a unit
embedding, a unique ``name`` (``photo#k`` for faces found in photos, the relative path for
face crops), a ``label`` (the person, ``""`` when unknown) and optional metadata (photo, path,
box, score, landmarks) plus the time it was added. The gallery's order is the order faces
were added in (what ``names``, ``labels`` and ``cluster`` follow).
"""

from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .source import BATCH_METADATA, METADATA, EmbeddingSource

# path prefix -> "module:Class" of the gallery kind (imported on use)
KINDS = {
    "milvus:": "resvision.tasks.face.gallery.milvus:MilvusGallery",
    "": "resvision.tasks.face.gallery.local:LocalGallery",
}


def check_source(
    recorded: EmbeddingSource | None, stated: EmbeddingSource | None, *, empty: bool, where: str
) -> EmbeddingSource | None:
    """The source the gallery records after adding faces of ``stated`` (``None``: not
    stated, taken on trust). Raises ``ValueError`` when the faces would mix models."""
    if stated is None or recorded == stated:
        return recorded
    if recorded is None and empty:
        return stated
    if recorded is None:
        raise ValueError(
            f"{where} does not record which model made its faces (they were imported from a "
            f"file that does not say), so faces of {stated.describe()} could mix models: "
            "import its faces again naming their model (`resvision face gallery import FILE "
            "GALLERY --checkpoint RUN`), or use a new gallery"
        )
    differ = [
        f for f in ("model", "alignment", "flip") if getattr(recorded, f) != getattr(stated, f)
    ]
    raise ValueError(
        f"{where} holds embeddings of {recorded.describe()}; these are of {stated.describe()} "
        f"({', '.join(differ)} differ): embeddings of different models or settings cannot be "
        "compared, so use the gallery's model and options, or another gallery"
    )


@dataclass
class Batch:
    """One checked batch of faces to add (``B`` faces)."""

    embeddings: np.ndarray  # (B, D) float32, unit length
    names: np.ndarray  # (B,) str
    labels: np.ndarray  # (B,) str, "" = unknown
    metadata: dict[str, np.ndarray]  # METADATA fields given, each (B, ...)
    photos_without_faces: np.ndarray  # photos looked at that hold no face
    paths_without_faces: np.ndarray  # their files ("" where not given)


def normalize(vectors: Any, dim: int, what: str) -> np.ndarray:
    """``(N, dim)`` float32 unit rows (rows within 1e-6 of unit length kept as they are);
    ``ValueError`` for another width, non-finite values or zero vectors."""
    x = np.asarray(vectors, np.float32)
    if x.ndim == 1 and x.size == dim:
        x = x[None]
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{what} have shape {x.shape}: this gallery holds {dim}-d embeddings")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} hold NaN or infinite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{what} hold {int((norms == 0).sum())} zero vectors (no direction)")
    # rows already of unit length (float32 rounding) stay as they are: imports round-trip
    off = np.abs(norms - 1) > 1e-6
    return np.ascontiguousarray(np.where(off, x / norms, x), np.float32)


def make_batch(
    dim: int,
    embeddings: Any,
    names: Sequence[str],
    labels: Sequence[str] | None,
    metadata: dict[str, Any],
) -> Batch:
    """Check one ``add``: widths, lengths, unique names, known metadata fields."""
    unknown = sorted(set(metadata) - set(METADATA) - set(BATCH_METADATA))
    if unknown:
        raise TypeError(
            f"unknown face metadata {unknown}: a face may carry {sorted(METADATA)}, a batch "
            f"{list(BATCH_METADATA)}"
        )
    names = np.asarray([str(n) for n in names], dtype=str)
    count = len(names)
    vectors = normalize(embeddings, dim, "embeddings") if count else np.zeros((0, dim), np.float32)
    if len(vectors) != count:
        raise ValueError(f"{len(vectors)} embeddings but {count} names: give one name per face")
    if "" in set(names.tolist()):
        raise ValueError("a face name is empty: every face needs a unique name")
    seen, repeated = set(), []
    for n in names.tolist():
        if n in seen:
            repeated.append(n)
        seen.add(n)
    if repeated:
        raise ValueError(f"names repeat within the batch: {repeated[:3]}")
    labels = (
        np.full(count, "", dtype=object)
        if labels is None
        else np.asarray(["" if v is None else str(v) for v in labels], dtype=object)
    )
    if len(labels) != count:
        raise ValueError(f"{len(labels)} labels for {count} faces: give one per face (or none)")
    meta = {}
    for key, (dtype, shape) in METADATA.items():
        if metadata.get(key) is None:
            continue
        value = np.asarray(metadata[key], dtype=dtype)
        if value.shape != (count, *shape):
            want = (count, *shape)
            raise ValueError(f"{key} has shape {value.shape}; {count} faces need {want}")
        meta[key] = value
    without = np.asarray(metadata.get("photos_without_faces") or [], dtype=str).reshape(-1)
    paths = metadata.get("paths_without_faces")
    paths = np.full(len(without), "", dtype=object) if paths is None else np.asarray(paths, str)
    if paths.shape != without.shape:
        raise ValueError(
            f"{len(paths)} paths_without_faces for {len(without)} photos_without_faces"
        )
    return Batch(vectors, names, labels.astype(str), meta, without, paths.astype(str))


def face_column(name: str, values: list) -> np.ndarray:
    """One column as an array: blobs back to float32, missing values as ``""``/-1/NaN."""
    if name in ("boxes", "landmarks"):
        shape = (4,) if name == "boxes" else (5, 2)
        out = np.full((len(values), *shape), np.nan, np.float32)
        for i, v in enumerate(values):
            if v is not None:
                out[i] = np.frombuffer(v, np.float32).reshape(shape)
        return out
    if name in ("scores", "added"):
        return np.array([math.nan if v is None else v for v in values], np.float64).astype(
            np.float32 if name == "scores" else np.float64
        )
    if name == "face_index":
        return np.array([-1 if v is None else v for v in values], np.int64)
    return np.array(["" if v is None else v for v in values], dtype=object).astype(str)


class Transaction(ABC):
    """One atomic update: everything added inside ``with gallery.transaction() as t:``
    becomes visible together when the block ends, or not at all (an exception, a kill)."""

    gallery: Gallery

    def add(
        self,
        embeddings: Any,
        names: Sequence[str],
        labels: Sequence[str] | None = None,
        **metadata: Any,
    ) -> int:
        """Add ``B`` faces (see :meth:`Gallery.add`), checked before anything is written;
        returns ``B``."""
        batch = make_batch(self.gallery.dim, embeddings, names, labels, metadata)
        taken = self._taken(batch.names.tolist())
        if taken:
            more = f" and {len(taken) - 3} more" if len(taken) > 3 else ""
            raise ValueError(
                f"gallery {self.gallery.path!r} already holds faces named {taken[:3]}{more}: "
                "names are unique (remove those faces first, or add under other names)"
            )
        self._write(batch)
        return len(batch.names)

    @abstractmethod
    def _taken(self, names: list[str]) -> list[str]:
        """Those of ``names`` the gallery (or this update) already holds."""

    @abstractmethod
    def _write(self, batch: Batch) -> None:
        """Write the checked ``batch`` as part of this update."""


class Gallery(ABC):
    """A face gallery on disk or on a server: add, remove, relabel, search, cluster.

    >>> g = Gallery.create("people.gallery", 512)  # doctest: +SKIP
    >>> g.add(vectors, ["ann/1.jpg", "bob/1.jpg"], labels=["ann", "bob"])  # doctest: +SKIP
    >>> scores, names = g.search(queries, 5)  # (Q, 5) each, best first  # doctest: +SKIP
    >>> ids = g.cluster(0.4, method="chinese-whispers")  # one id per face  # doctest: +SKIP
    """

    path: str
    dim: int

    # -- opening -----------------------------------------------------------------------------
    @staticmethod
    def kind(path: Any) -> type[Gallery]:
        """The gallery class serving ``path`` (by its prefix: ``milvus:`` or a folder)."""
        text = str(path)
        for prefix, target in KINDS.items():
            if text.startswith(prefix):
                module, name = target.split(":")
                return getattr(importlib.import_module(module), name)
        raise AssertionError("KINDS ends with the catch-all ''")

    @classmethod
    def create(
        cls, path: Any, dim: int, *, source: EmbeddingSource | None = None, **options: Any
    ) -> Gallery:
        """A new empty gallery of ``dim``-d embeddings at ``path`` (``FileExistsError`` when
        one is there); ``source`` records which model will fill it (else the first add's)."""
        kind = cls.kind(path) if cls is Gallery else cls
        return kind._create(str(path), int(dim), source=source, **options)

    @classmethod
    def open(cls, path: Any) -> Gallery:
        """The gallery at ``path`` (``FileNotFoundError`` naming how to make one)."""
        kind = cls.kind(path) if cls is Gallery else cls
        return kind._open(str(path))

    @classmethod
    @abstractmethod
    def _create(cls, path: str, dim: int, *, source: EmbeddingSource | None, **options) -> Gallery:
        """Make the gallery (``create`` checks nothing else)."""

    @classmethod
    @abstractmethod
    def _open(cls, path: str) -> Gallery:
        """Open an existing gallery."""

    def close(self) -> None:  # noqa: B027 - galleries without resources need nothing
        """Release files or connections (the gallery cannot be used afterwards)."""

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- what it holds ---------------------------------------------------------------------
    @property
    @abstractmethod
    def source(self) -> EmbeddingSource | None:
        """Which model made the embeddings (``None`` until known)."""

    @abstractmethod
    def __len__(self) -> int:
        """How many faces the gallery holds."""

    @property
    def names(self) -> np.ndarray:
        """``(N,)`` every face's name, in the gallery's order."""
        return self.faces(columns=("name",))["name"]

    @property
    def labels(self) -> np.ndarray:
        """``(N,)`` every face's label (the person; ``""`` when unknown), in order."""
        return self.faces(columns=("label",))["label"]

    @abstractmethod
    def faces(
        self, names: Sequence[str] | None = None, *, columns: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Columns of the faces named (all, in the gallery's order, when ``names`` is None;
        ``KeyError`` for a name the gallery lacks): ``name``, ``label``, ``added`` (unix
        time) and the :data:`METADATA` fields (``photos``, ``paths``, ``face_index``,
        ``boxes``, ``scores``, ``landmarks``; empty, ``-1`` or NaN where a face has none)."""

    @abstractmethod
    def embeddings(self) -> np.ndarray:
        """``(N, D)`` every face's embedding in the gallery's order (memory-mapped when the
        gallery allows it)."""

    @abstractmethod
    def photos(self) -> np.ndarray:
        """Every photo added (with faces or without), sorted."""

    @abstractmethod
    def info(self) -> dict[str, Any]:
        """What ``resvision face gallery info`` prints: counts, source, search plan, size."""

    # -- updates -------------------------------------------------------------------------------
    @abstractmethod
    def transaction(self, *, source: EmbeddingSource | None = None):
        """A context manager giving a :class:`Transaction`: every add inside it becomes
        visible at once when the block ends, or not at all. ``source`` says which model made
        what is added (checked against the gallery's)."""

    def add(
        self,
        embeddings: Any,
        names: Sequence[str],
        labels: Sequence[str] | None = None,
        *,
        source: EmbeddingSource | None = None,
        **metadata: Any,
    ) -> int:
        """Add ``B`` faces atomically: ``embeddings (B, D)`` (normalized to unit length),
        unique ``names``, ``labels`` (the people, optional) and per-face metadata
        (``photos``, ``paths``, ``face_index``, ``boxes (B, 4)``, ``scores``,
        ``landmarks (B, 5, 2)``), plus ``photos_without_faces`` and their
        ``paths_without_faces`` (photos looked at that hold no face: recorded so that they
        are skipped next time). A name the gallery already holds is a ``ValueError``.
        Returns ``B``."""
        with self.transaction(source=source) as t:
            return t.add(embeddings, names, labels, **metadata)

    @abstractmethod
    def remove(
        self,
        *,
        names: Sequence[str] | None = None,
        labels: Sequence[str] | None = None,
        photos: Sequence[str] | None = None,
    ) -> int:
        """Remove the faces with any of these names, labels or photos (and forget those
        photos), atomically; returns how many faces went."""

    @abstractmethod
    def relabel(self, old: str | Sequence[str], new: str) -> int:
        """Give every face labelled ``old`` (one label, or several to merge) the label ``new``
        (which may exist: the people merge), atomically; returns how many faces changed."""

    # -- search -------------------------------------------------------------------------------
    @abstractmethod
    def _search_rows(
        self, queries: np.ndarray, k: int, *, labels: Sequence[str] | None, nprobe: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, rows)``, each ``(Q, k)``, best first; rows are the gallery's own
        identifiers of faces, ``-1`` past the last result."""

    @abstractmethod
    def _names_of(self, rows: np.ndarray) -> np.ndarray:
        """The names of ``rows`` (any shape; ``""`` for ``-1``)."""

    def search(
        self,
        queries: Any,
        k: int = 5,
        *,
        labels: Sequence[str] | None = None,
        threshold: float | None = None,
        nprobe: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar faces of each query: ``(scores, names)``, each ``(Q, k)``,
        best first (cosine). ``labels`` restricts the search to those people; with
        ``threshold``, results below it are left out; a slot without a result holds score
        ``-inf`` and name ``""`` (a query whose first slot is empty matches nobody:
        "unknown"). ``nprobe`` overrides the index's for this search."""
        if k < 1:
            raise ValueError(f"k={k}: ask for at least one result per query")
        q = normalize(queries, self.dim, "queries")
        scores, rows = self._search_rows(q, int(k), labels=labels, nprobe=nprobe)
        if threshold is not None:
            below = scores < threshold
            scores, rows = np.where(below, -np.inf, scores), np.where(below, -1, rows)
        return scores.astype(np.float32), self._names_of(rows)

    # -- clustering ---------------------------------------------------------------------------
    @abstractmethod
    def knn(self, k: int, *, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k-nearest-neighbour graph: ``(scores, neighbours)``, each ``(N, k)``, best
        first; ``neighbours`` are positions in the gallery's order (``-1`` past the last),
        each face's own left out."""

    def cluster(
        self,
        threshold: float,
        method: str = "threshold",
        *,
        k: int = 32,
        nprobe: int | None = None,
        seed: int = 0,
    ) -> np.ndarray:
        """One cluster id per face, in the gallery's order (clusters numbered by first
        appearance), from the ``k``-nearest-neighbour graph: ``threshold`` (connected
        components of the links ``cosine > threshold``: exactly an all-pairs search's
        partition wherever ``k`` covers every such link) or ``chinese-whispers`` (each face
        takes the label its links weigh most for: no chaining through single links);
        :mod:`resvision.tasks.face.clustering`."""
        from resvision.tasks.face.clustering import METHODS, cluster_graph

        if method not in METHODS:
            raise ValueError(f"unknown clustering method {method!r}: choose one of {list(METHODS)}")
        scores, neighbours = self.knn(k, nprobe=nprobe)
        return cluster_graph(scores, neighbours, threshold, method, seed=seed)

    # -- .npz files ---------------------------------------------------------------------------
    def import_npz(self, path: Any, *, source: EmbeddingSource | None = None) -> int:
        """Add every face of an ``.npz`` of ``resvision face embed`` (embeddings of face
        crops, or a gallery of photos written with ``--detector``) in one atomic update;
        ``source`` when the file does not record its model."""
        from .npz import read_npz

        batch, recorded = read_npz(path)
        if recorded is not None and source is not None and recorded != source:
            raise ValueError(
                f"{path} records {recorded.describe()}, not {source.describe()}: drop "
                "--checkpoint (the file knows its model) or give the model that made it"
            )
        with self.transaction(source=recorded or source) as t:
            return t.add(batch.pop("embeddings"), batch.pop("names"), batch.pop("labels"), **batch)

    def export_npz(self, path: Any) -> str:
        """Write the gallery as today's ``.npz``: a gallery of photos (``face embed
        --detector``'s layout) when every face knows its photo and box, else embeddings with
        names and labels. Written atomically; returns the kind written."""
        from .npz import write_npz

        return write_npz(self, path)
