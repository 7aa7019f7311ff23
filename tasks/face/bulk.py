"""What ``resvision face embed`` (and ``predict face``) writes for a collection of face images:
the embeddings file, an ``.npz`` with ``embeddings (N, D)`` float32 unit length and ``names
(N,)``, assembled from the engine's parts. The crops are aligned (from landmarks) or resized in
the decoding workers, so the model gets whole batches of ready crops."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from resvision.datasets.inputs import InputImage
from resvision.tasks.engine.bulk import BulkJob, Entry, LoadedBatch, Loader
from resvision.tasks.engine.streams import NpzWriter

from .inference import Embedder, read_face_crop


class EmbeddingsBulk(BulkJob):
    """Embed aligned crops (or photos with landmarks: the run's ``extras``) into ``out``."""

    def __init__(
        self, embedder: Embedder, out: Path, *, flip: bool, depends_on: dict[str, Any]
    ) -> None:
        super().__init__(depends_on)
        self.embedder, self.out, self.flip = embedder, Path(out), flip

    def loader(self) -> Loader:
        return functools.partial(read_face_crop, image_size=self.embedder.image_size)

    def process(self, batch: LoadedBatch, inputs: Sequence[InputImage]) -> list[Entry]:
        readable = batch.readable()
        entries = {}
        if readable:
            crops = torch.stack([c for _, c in readable])
            vectors = self.embedder.embed_crops(crops, flip=self.flip)
            for (i, _), v in zip(readable, vectors):
                entries[i] = Entry(i, arrays={"embeddings": v[None]})
        return batch.entries(entries)

    def assemble(self, entries: Iterator[tuple[InputImage, Entry]]) -> dict[str, Any]:
        size = self.embedder.model.embedding_size
        count = 0
        with NpzWriter(self.out) as writer:
            writer.declare("embeddings", "float32", (size,))
            writer.declare("names", str)
            for item, entry in entries:
                writer.append(embeddings=entry.arrays["embeddings"], names=[item.name])
                count += 1
            if not count:
                writer.discard()
        return {"dimension": size, "written": count > 0}
