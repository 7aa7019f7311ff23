"""What ``resvision predict segmentation`` writes for a collection of images: per image a palette
label PNG (pixel = class index) and a colour overlay with a legend; over the collection, the share
of pixels of each class."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from resvision.datasets.images import encode_rgb
from resvision.datasets.inputs import InputImage
from resvision.datasets.segmentation import voc_palette
from resvision.tasks.engine.bulk import BulkJob, Entry, LoadedBatch
from resvision.tasks.engine.files import atomic_write_bytes

from .inference import Progress, Segmenter
from .visualize import add_legend, overlay, overlay_palette, save_label_png


class SegmentationBulk(BulkJob):
    """Segment, write ``outputs[i] = (label png, overlay)`` of every input, count pixels."""

    def __init__(
        self,
        segmenter: Segmenter,
        outputs: Sequence[tuple[Path, Path]],
        *,
        depends_on: dict[str, Any],
        progress: Progress | None = None,
    ) -> None:
        super().__init__(depends_on)
        self.segmenter, self.outputs, self.progress = segmenter, list(outputs), progress
        self.labels_palette = voc_palette()
        self.colours = overlay_palette(len(segmenter.class_names))

    def process(self, batch: LoadedBatch, inputs: Sequence[InputImage]) -> list[Entry]:
        readable = batch.readable()
        found = self.segmenter.predict(
            [rgb.permute(2, 0, 1) for _, rgb in readable],
            batch_size=max(1, len(readable)),
            progress=self.progress,
        )
        entries = {}
        k = len(self.segmenter.class_names)
        for (i, rgb), labels in zip(readable, found):
            label_path, overlay_path = self.outputs[i]
            save_label_png(labels, label_path, self.labels_palette)
            names = self.segmenter.class_names
            picture = add_legend(
                overlay(rgb.numpy(), labels, self.colours), labels, names, self.colours
            )
            atomic_write_bytes(
                overlay_path, encode_rgb(picture, overlay_path.suffix), durable=False
            )
            counts = np.bincount(labels.reshape(-1), minlength=k)[:k].astype(np.int64)
            entries[i] = Entry(i, arrays={"pixels": counts[None]})
        return batch.entries(entries)

    def assemble(self, entries: Iterator[tuple[InputImage, Entry]]) -> dict[str, Any]:
        return {"pixel_share": pixel_share(e.arrays["pixels"][0] for _, e in entries)}


def pixel_share(counts: Iterable[np.ndarray]) -> np.ndarray:
    """Each class's share of all pixels, from per-image pixel counts."""
    total = None
    for c in counts:
        total = c.astype(np.int64) if total is None else total + c
    if total is None:
        return np.zeros(0)
    return total / max(int(total.sum()), 1)
