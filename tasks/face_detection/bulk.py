"""What ``resvision predict face-detection`` writes for a collection of images: each image with
its faces drawn (box, five landmarks, score) and ``faces.json`` (per image: its name, size, and
per face the box xyxy, score and landmarks)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from resvision.datasets.images import encode_rgb
from resvision.datasets.inputs import InputImage
from resvision.tasks.engine.bulk import BulkJob, Entry, LoadedBatch
from resvision.tasks.engine.files import atomic_write_bytes
from resvision.tasks.engine.streams import json_list_file

from .inference import FaceDetector
from .visualize import draw_faces


def faces_record(found: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """One image's faces as ``faces.json`` keeps them (boxes and landmarks to 0.01 px)."""
    return [
        {
            "box": [round(float(v), 2) for v in box],
            "score": round(float(score), 5),
            "landmarks": [[round(float(v), 2) for v in pt] for pt in points],
        }
        for box, score, points in zip(found["boxes"], found["scores"], found["landmarks"])
    ]


class FaceDetectionBulk(BulkJob):
    """Detect faces, draw each image (``drawn[i]``), keep ``faces.json``'s records."""

    group_by_aspect = True

    def __init__(
        self,
        detector: FaceDetector,
        out: Path,
        drawn: Sequence[Path],
        *,
        score_threshold: float,
        depends_on: dict[str, Any],
    ) -> None:
        super().__init__(depends_on)
        self.detector, self.out, self.drawn = detector, Path(out), list(drawn)
        self.score_threshold = score_threshold

    def process(self, batch: LoadedBatch, inputs: Sequence[InputImage]) -> list[Entry]:
        readable = batch.readable()
        found = self.detector.detect(
            [rgb.permute(2, 0, 1) for _, rgb in readable],
            batch_size=max(1, len(readable)),
            score_threshold=self.score_threshold,
        )
        entries = {}
        for (i, rgb), r in zip(readable, found):
            picture = rgb.numpy()
            captions = [f"{s:.2f}" for s in r["scores"]]
            drawn = draw_faces(picture, r["boxes"], r["landmarks"], captions)
            atomic_write_bytes(
                self.drawn[i], encode_rgb(drawn, self.drawn[i].suffix), durable=False
            )
            record = {
                "height": picture.shape[0],
                "width": picture.shape[1],
                "faces": faces_record(r),
            }
            entries[i] = Entry(i, record)
        return batch.entries(entries)

    def assemble(self, entries: Iterator[tuple[InputImage, Entry]]) -> dict[str, Any]:
        count = 0
        with json_list_file(self.out / "faces.json", indent=1) as out:
            for item, entry in entries:
                count += len(entry.record["faces"])
                out.write({"file_name": item.name, **entry.record})
        return {"faces": count}
