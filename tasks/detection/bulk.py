"""What ``resvision predict detection`` writes for a collection of images: each image with its
boxes drawn, and three aggregated files assembled from the engine's parts: ``detections.json``
(file name, class, box xywh, score), a COCO results file ``coco_results.json`` and its image
list ``coco_images.json`` (the images' ids, names and sizes, and the categories)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from resvision.datasets.images import encode_rgb
from resvision.datasets.inputs import InputImage
from resvision.tasks.engine.bulk import BulkJob, Entry, LoadedBatch
from resvision.tasks.engine.files import atomic_open, atomic_write_bytes
from resvision.tasks.engine.streams import JsonListWriter, json_list_file

from .inference import Detector
from .visualize import class_colours, draw_detections

OUTPUT_FILES = ("detections.json", "coco_results.json", "coco_images.json")


def detection_record(found: dict[str, np.ndarray]) -> list[list]:
    """One image's detections as ``[[x, y, w, h], score, label]`` rows (COCO's box layout,
    rounded as the results files keep them: boxes to 0.01 px, scores to 1e-5)."""
    rows = []
    for box, score, label in zip(found["boxes"], found["scores"], found["labels"]):
        x1, y1, x2, y2 = (float(v) for v in box)
        xywh = [round(v, 2) for v in (x1, y1, x2 - x1, y2 - y1)]
        rows.append([xywh, round(float(score), 5), int(label)])
    return rows


def coco_result_records(
    rows: list[list], *, image_id: int, category_ids: Sequence[int]
) -> list[dict[str, Any]]:
    """COCO results (``image_id``, ``category_id``, ``bbox`` xywh, ``score``) of one image's
    rows; ``category_ids[label - 1]`` is the data's own id of each label."""
    return [
        {
            "image_id": image_id,
            "category_id": int(category_ids[label - 1]),
            "bbox": xywh,
            "score": score,
        }
        for xywh, score, label in rows
    ]


class DetectionBulk(BulkJob):
    """Detect, draw each image (``drawn[i]``: its output path), keep the detections."""

    group_by_aspect = True

    def __init__(
        self,
        detector: Detector,
        out: Path,
        drawn: Sequence[Path],
        *,
        score_threshold: float,
        tta: bool,
        depends_on: dict[str, Any],
    ) -> None:
        super().__init__(depends_on)
        self.detector, self.out, self.drawn = detector, Path(out), list(drawn)
        self.score_threshold, self.tta = score_threshold, tta
        self.colours = class_colours(len(detector.class_names))

    def process(self, batch: LoadedBatch, inputs: Sequence[InputImage]) -> list[Entry]:
        readable = batch.readable()
        found = self.detector.predict(
            [rgb.permute(2, 0, 1) for _, rgb in readable],
            batch_size=max(1, len(readable)),
            tta=self.tta,
        )
        entries = {}
        for (i, rgb), r in zip(readable, found):
            picture = rgb.numpy()
            shown = r["scores"] >= self.score_threshold
            drawn = draw_detections(
                picture,
                r["boxes"][shown],
                r["scores"][shown],
                r["class_names"][shown],
                self.colours[r["labels"][shown]],
            )
            path = self.drawn[i]
            atomic_write_bytes(path, encode_rgb(drawn, path.suffix), durable=False)
            record = {
                "height": picture.shape[0],
                "width": picture.shape[1],
                "detections": detection_record(r),
                "drawn": int(shown.sum()),
            }
            entries[i] = Entry(i, record)
        return batch.entries(entries)

    def assemble(self, entries: Iterator[tuple[InputImage, Entry]]) -> dict[str, Any]:
        names, ids = self.detector.class_names, self.detector.category_ids
        categories = [{"id": int(c), "name": n} for c, n in zip(ids, names)]
        image_id = drawn = 0
        with (
            json_list_file(self.out / "detections.json", indent=1) as readable,
            json_list_file(self.out / "coco_results.json") as results,
            atomic_open(self.out / "coco_images.json", "w") as images_file,
        ):
            images_file.write('{\n "images": ')
            pictures = JsonListWriter(images_file, indent=1, level=1)
            for item, entry in entries:
                image_id += 1
                rec = entry.record
                pictures.write(
                    {
                        "id": image_id,
                        "file_name": item.name,
                        "height": rec["height"],
                        "width": rec["width"],
                    }
                )
                drawn += rec["drawn"]
                rows = rec["detections"]
                for xywh, score, label in rows:
                    readable.write(
                        {
                            "file_name": item.name,
                            "category": str(names[label - 1]),
                            "category_id": label,
                            "bbox": xywh,
                            "score": score,
                        }
                    )
                for r in coco_result_records(rows, image_id=image_id, category_ids=ids):
                    results.write(r)
            pictures.close()
            listed = json.dumps(categories, indent=1).replace("\n", "\n ")
            images_file.write(f',\n "categories": {listed}\n}}')
        return {"drawn": drawn}
