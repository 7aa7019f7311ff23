"""COCO box evaluation through faster-coco-eval (default) or pycocotools, with identical numbers.

Ground truth is built from the compact annotations as a COCO dict in memory (no json round
trip) with annotation ids renumbered 1..M: pycocotools' matching uses 0 to mean "unmatched", so a
ground-truth box with id 0 (labeling tools export ids from 0) can never count as found.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from resvision.datasets.detection import DetectionAnnotations
from resvision.tasks.engine import distributed as D
from resvision.tasks.engine.task import Evaluator
from resvision.tasks.table import format_table

logging.getLogger("faster_coco_eval").setLevel(logging.WARNING)  # its summary is ours to print

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def gt_coco_dict(ann: DetectionAnnotations) -> dict:
    """The ground truth as a COCO dict (original image and category ids, annotation ids 1..M)."""
    images = [
        {"id": int(i), "file_name": ann.file_name(n), "height": int(h), "width": int(w)}
        for n, (i, h, w) in enumerate(zip(ann.image_ids, ann.heights, ann.widths))
    ]
    image_of_box = np.repeat(np.arange(len(ann)), np.diff(ann.offsets))
    b = ann.boxes.astype(np.float64)
    annotations = [
        {
            "id": j + 1,
            "image_id": int(ann.image_ids[image_of_box[j]]),
            "category_id": int(ann.category_ids[ann.labels[j] - 1]),
            "bbox": [b[j, 0], b[j, 1], b[j, 2] - b[j, 0], b[j, 3] - b[j, 1]],
            "area": float(ann.areas[j]),
            "iscrowd": int(ann.iscrowd[j]),
        }
        for j in range(ann.num_boxes)
    ]
    categories = [{"id": int(c), "name": n} for c, n in zip(ann.category_ids, ann.class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def detections_to_rows(
    image_id: int,
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    category_ids: np.ndarray,
) -> np.ndarray:
    """One image's detections (xyxy boxes, contiguous labels) -> ``(D, 7)`` COCO result rows
    ``[image_id, x, y, w, h, score, category_id]``."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    rows = np.empty((len(boxes), 7), np.float64)
    rows[:, 0] = image_id
    rows[:, 1:3] = boxes[:, :2]
    rows[:, 3:5] = boxes[:, 2:] - boxes[:, :2]
    rows[:, 5] = scores
    rows[:, 6] = category_ids[np.asarray(labels, np.int64) - 1]
    return rows


def rows_to_json(rows: np.ndarray) -> list[dict]:
    return [
        {
            "image_id": int(r[0]),
            "category_id": int(r[6]),
            "bbox": [round(float(v), 3) for v in r[1:5]],
            "score": round(float(r[5]), 5),
        }
        for r in rows
    ]


class COCOEvaluator:
    """Box AP/AR of ``(D, 7)`` result rows against compact annotations."""

    def __init__(
        self,
        ann: DetectionAnnotations,
        backend: Literal["faster_coco_eval", "pycocotools"] = "faster_coco_eval",
        ground_truth: dict | None = None,
    ) -> None:
        if backend not in ("faster_coco_eval", "pycocotools"):
            raise ValueError(
                f"evaluation backend {backend!r}: choose faster_coco_eval or pycocotools"
            )
        self.ann = ann
        self.backend = backend
        # a COCO json's own content (datasets.detection.coco_ground_truth) when there is one:
        # the compact annotations are clipped and filtered for training
        self.gt_dict = ground_truth if ground_truth is not None else gt_coco_dict(ann)
        self._gt = None
        self.last_eval = None

    def _coco_gt(self):
        if self._gt is None:
            with contextlib.redirect_stdout(io.StringIO()):
                if self.backend == "faster_coco_eval":
                    from faster_coco_eval import COCO

                    self._gt = COCO(self.gt_dict)
                else:
                    from pycocotools.coco import COCO

                    gt = COCO()
                    gt.dataset = self.gt_dict
                    gt.createIndex()
                    self._gt = gt
        return self._gt

    def evaluate(self, rows: np.ndarray) -> dict[str, float]:
        """The 12 COCO numbers plus ``AP/<class>`` (AP over IoU .50:.95, all areas, 100 dets)."""
        rows = np.asarray(rows, np.float64).reshape(-1, 7)
        if len(rows) == 0:
            return dict.fromkeys(METRICS, 0.0) | {f"AP/{n}": 0.0 for n in self.ann.class_names}
        gt = self._coco_gt()
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(rows)
            if self.backend == "faster_coco_eval":
                from faster_coco_eval import COCOeval_faster

                ev = COCOeval_faster(gt, dt, "bbox")
            else:
                from pycocotools.cocoeval import COCOeval

                ev = COCOeval(gt, dt, "bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        self.last_eval = ev
        out = {name: float(v) for name, v in zip(METRICS, ev.stats[:12])}
        precision = ev.eval["precision"]  # (T, R, K, A, M)
        cat_ids = list(ev.params.catIds)
        for name, cat in zip(self.ann.class_names, self.ann.category_ids):
            if int(cat) not in cat_ids:
                continue
            p = precision[:, :, cat_ids.index(int(cat)), 0, -1]
            p = p[p > -1]
            if p.size:  # classes without ground truth have no AP
                out[f"AP/{name}"] = float(p.mean())
        return out


def _percent(value: float) -> float | str:
    """A COCO figure in percent; COCO's -1 (no objects of that size or class) shows as "-"."""
    return "-" if value < 0 or np.isnan(value) else round(100 * value, 2)


def ap_table(metrics: dict[str, float], class_names: tuple[str, ...]) -> str:
    """The COCO summary and a per-class AP table (percent; "-" where COCO has no figure)."""
    summary = format_table(METRICS, [[_percent(metrics[m]) for m in METRICS]], floatfmt=".2f")
    rows = [
        [n, round(100 * metrics[f"AP/{n}"], 2)]
        for n in class_names
        if f"AP/{n}" in metrics and not np.isnan(metrics[f"AP/{n}"])
    ]
    return summary + "\n\n" + format_table(("class", "AP"), rows, floatfmt=".2f")


def write_results(rows: np.ndarray, path: str | Path) -> Path:
    """COCO results json (the format COCO's evaluation server takes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows_to_json(rows)))
    return path


class DetectionEvaluator(Evaluator):
    """COCO box AP/AR of the predictions on an annotated set, gathered over ranks.

    ``process(batch, results)`` takes the batch's dataset ``indices`` and one result dict per
    image (``boxes`` xyxy in the image's pixels, ``scores``, contiguous ``labels``);
    :meth:`write_report` writes the COCO results json and the per-class AP table.
    """

    def __init__(
        self,
        ann: DetectionAnnotations,
        backend: Literal["faster_coco_eval", "pycocotools"] = "faster_coco_eval",
        ground_truth: dict | None = None,
    ) -> None:
        self.ann = ann
        self.coco = COCOEvaluator(ann, backend, ground_truth)
        self.last_rows: np.ndarray | None = None
        self.last_metrics: dict[str, float] = {}
        self.reset()

    def reset(self) -> None:
        self.rows: list[np.ndarray] = []

    def process(self, batch: dict[str, Any], results: Sequence[dict]) -> None:
        for i, r in zip(batch["indices"], results):
            self.rows.append(
                detections_to_rows(
                    int(self.ann.image_ids[i]),
                    r["boxes"].float().cpu().numpy(),
                    r["scores"].float().cpu().numpy(),
                    r["labels"].cpu().numpy(),
                    self.ann.category_ids,
                )
            )

    def evaluate(self) -> dict[str, float]:
        local = np.concatenate(self.rows) if self.rows else np.zeros((0, 7))
        parts = D.gather_objects(local)  # every rank's predictions before scoring
        metrics = None
        if D.current().is_main:
            self.last_rows = np.concatenate(parts)
            metrics = self.coco.evaluate(self.last_rows)
        self.last_metrics = D.broadcast_object(metrics)
        return self.last_metrics

    def write_report(self, folder: Path) -> str | None:
        if self.last_rows is None:
            return None
        write_results(self.last_rows, Path(folder) / "predictions.json")
        table = ap_table(self.last_metrics, self.ann.class_names)
        (Path(folder) / "ap.md").write_text(table + "\n")
        return table
