"""What ``resvision face embed`` (and ``predict face``) writes for a collection of face images:
the embeddings file, an ``.npz`` with ``embeddings (N, D)`` float32 unit length, ``names (N,)``
and ``source`` (what made them: :class:`~.gallery.EmbeddingSource`), assembled from the
engine's parts; or, with ``--gallery``, the same faces added to a gallery in one update. The
crops are aligned (from landmarks) or resized in the decoding workers, so the model gets whole
batches of ready crops."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from resvision.datasets.inputs import InputImage
from resvision.tasks.engine.bulk import BulkJob, Entry, LoadedBatch, Loader
from resvision.tasks.engine.streams import NpzWriter

from .gallery.npz import crop_label
from .gallery.source import EmbeddingSource
from .gallery.writer import GalleryOutput, GalleryWriter, photo_name
from .inference import Embedder, read_face_crop


def faces_writer(out: Path | GalleryOutput, dim: int, source: EmbeddingSource | None):
    """Where a bulk job's faces go: an :class:`NpzWriter` (recording ``source``), or a
    :class:`GalleryWriter` for a :class:`GalleryOutput`."""
    if isinstance(out, GalleryOutput):
        return GalleryWriter(out.path, dim=dim, source=source)
    writer = NpzWriter(out)
    if source is not None:
        writer.put("source", source.to_json())
    return writer


class EmbeddingsBulk(BulkJob):
    """Embed aligned crops (or photos with landmarks: the run's ``extras``) into ``out``: an
    ``.npz`` path, or a :class:`GalleryOutput` (each crop named by :func:`photo_name`,
    labelled by its folder, remembered by its file); unit length unless not ``normalize``."""

    def __init__(
        self,
        embedder: Embedder,
        out: Path | GalleryOutput,
        *,
        flip: bool,
        depends_on: dict[str, Any],
        source: EmbeddingSource | None = None,
        normalize: bool = True,
    ) -> None:
        super().__init__(depends_on)
        self.embedder, self.flip, self.source = embedder, flip, source
        self.normalize = normalize
        self.out = out if isinstance(out, GalleryOutput) else Path(out)

    def loader(self) -> Loader:
        return functools.partial(read_face_crop, image_size=self.embedder.image_size)

    def process(self, batch: LoadedBatch, inputs: Sequence[InputImage]) -> list[Entry]:
        readable = batch.readable()
        entries = {}
        if readable:
            crops = torch.stack([c for _, c in readable])
            vectors = self.embedder.embed_crops(crops, flip=self.flip, normalize=self.normalize)
            for (i, _), v in zip(readable, vectors):
                entries[i] = Entry(i, arrays={"embeddings": v[None]})
        return batch.entries(entries)

    def assemble(self, entries: Iterator[tuple[InputImage, Entry]]) -> dict[str, Any]:
        size = self.embedder.model.embedding_size
        gallery = isinstance(self.out, GalleryOutput)
        count = 0
        with faces_writer(self.out, size, self.source) as writer:
            writer.declare("embeddings", "float32", (size,))
            writer.declare("names", str)
            for item, entry in entries:
                if gallery:
                    name = photo_name(item.name, item.path)
                    writer.append(
                        embeddings=entry.arrays["embeddings"],
                        names=[name],
                        labels=[crop_label(item.name)],
                        photos=[name],
                        paths=[str(item.path.resolve())],
                    )
                else:
                    writer.append(embeddings=entry.arrays["embeddings"], names=[item.name])
                count += 1
            if not count:
                writer.discard()
        report = {"dimension": size, "written": count > 0}
        return report | ({"gallery_size": writer.size} if gallery else {})
