"""``face embed ... --gallery G``: what the bulk path assembles goes into a gallery instead of an
``.npz``. :class:`GalleryWriter` takes the ``.npz``'s columns as they arrive (the interface of
:class:`~resvision.tasks.engine.streams.NpzWriter`) and adds them, ``chunk`` faces at a time,
in one gallery transaction: the faces appear together when the block ends, or not at all (an
error, a kill), and memory does not grow with the number of faces."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .base import Gallery, check_source
from .source import EmbeddingSource

CHUNK = 4096  # faces per Gallery.add inside the transaction


@dataclass(frozen=True)
class GalleryOutput:
    """Where ``face embed --gallery`` puts its faces: the gallery's path (a folder, or
    ``milvus:...``) and what made the embeddings."""

    path: str
    source: EmbeddingSource | None = None


def photo_name(name: str, path: str | os.PathLike) -> str:
    """A photo's (or face crop's) name in a gallery: ``name`` (relative to the folder it was
    found in) behind that folder's own name (``face embed photos/`` names
    ``photos/alice/1.jpg``), so that two folders added one after the other keep their photos
    apart and drawings keep relative paths."""
    depth = len(Path(name).parts)
    root = Path(path).resolve().parents[depth - 1]
    return f"{root.name}/{name}" if root.name else name


def open_for_writing(path: str, dim: int, source: EmbeddingSource | None) -> Gallery:
    """The gallery at ``path``, created (``dim``-d) when there is none; a gallery of another
    width or model is refused (``ValueError``) before any work."""
    not_npz(path)
    try:
        g = Gallery.open(path)
    except FileNotFoundError:
        return Gallery.create(path, dim, source=source)
    try:
        check_writable(g, dim, source)
    except ValueError:
        g.close()
        raise
    return g


def not_npz(path: str) -> None:
    """A gallery is never an ``.npz`` (``ValueError`` naming ``--out``)."""
    if str(path).endswith(".npz"):
        raise ValueError(
            f"--gallery {path!r}: a gallery is a folder (or milvus://...), not an .npz (write "
            "one with --out)"
        )


def check_writable(g: Gallery, dim: int, source: EmbeddingSource | None) -> None:
    """``ValueError`` when faces of ``dim``-d embeddings made by ``source`` cannot join ``g``."""
    if g.dim != dim:
        raise ValueError(f"gallery {g.path!r} holds {g.dim}-d embeddings; this model makes {dim}-d")
    check_source(g.source, source, empty=len(g) == 0, where=f"gallery {g.path!r}")


class _Discard(Exception):
    """Rolls the transaction back (:meth:`GalleryWriter.discard`)."""


class GalleryWriter:
    """:class:`~resvision.tasks.engine.streams.NpzWriter`'s interface over one gallery
    transaction: ``append`` takes :meth:`Gallery.add`'s arguments as columns of rows (faces;
    ``photos_without_faces`` and ``paths_without_faces`` are rows of their own).

    >>> with GalleryWriter("people.gallery", dim=512, source=source) as out:  # doctest: +SKIP
    ...     for vectors, names in batches:
    ...         out.append(embeddings=vectors, names=names)
    """

    def __init__(
        self,
        path: str,
        *,
        dim: int,
        source: EmbeddingSource | None = None,
        chunk: int = CHUNK,
    ) -> None:
        self.path, self.dim, self.source, self.chunk = str(path), int(dim), source, chunk
        self.pending: dict[str, list] = {}
        self.buffered = 0
        self.added = 0
        self.discarded = False

    def __enter__(self) -> GalleryWriter:
        self.gallery = open_for_writing(self.path, self.dim, self.source)
        try:
            self._update = self.gallery.transaction(source=self.source)
            self._transaction = self._update.__enter__()
        except BaseException:
            self.gallery.close()
            raise
        return self

    def declare(self, key: str, dtype: Any, row_shape: tuple[int, ...] = ()) -> None:
        """Nothing to declare: the gallery knows its columns."""

    def append(self, **chunks: Any) -> None:
        for key, value in chunks.items():
            self.pending.setdefault(key, []).append(value)
        self.buffered += len(chunks.get("names", ()))
        if self.buffered >= self.chunk:
            self._flush()

    def discard(self) -> None:
        """Add nothing: the transaction is rolled back at the end of the block."""
        self.discarded = True

    def _flush(self) -> None:
        if not self.pending:
            return
        columns = {}
        for key, parts in self.pending.items():
            if key in ("embeddings", "boxes", "landmarks"):
                columns[key] = np.concatenate([np.asarray(p, np.float32) for p in parts])
            else:
                columns[key] = [v for p in parts for v in np.asarray(p).reshape(-1).tolist()]
        self.pending, self.buffered = {}, 0
        if "embeddings" not in columns:
            columns["embeddings"] = np.zeros((0, self.dim), np.float32)
            columns["names"] = []
        self.added += self._transaction.add(
            columns.pop("embeddings"), columns.pop("names"), columns.pop("labels", None), **columns
        )

    def __exit__(self, exc_type, exc, tb) -> None:
        """Commit when the block ends normally (unless discarded); roll back otherwise."""
        try:
            if exc_type is None and not self.discarded:
                try:
                    self._flush()
                except BaseException as e:
                    self._update.__exit__(type(e), e, e.__traceback__)
                    raise
                self._update.__exit__(None, None, None)
            elif exc_type is None:
                stop = _Discard()
                self._update.__exit__(_Discard, stop, None)
            else:
                self._update.__exit__(exc_type, exc, tb)
            self.size = len(self.gallery)
        finally:
            self.gallery.close()
