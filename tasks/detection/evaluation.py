"""COCO box and mask evaluation of detectors, and the COCO results records they write.

The numbers come from the shared COCO evaluation (:mod:`resvision.tasks.engine.coco`: vernier by
default, faster-coco-eval or pycocotools; identical figures). The ground truth is a COCO json's
own content whenever the annotations came from one (what pycocotools scores: the compact
annotations are clipped and filtered for training), otherwise built from the annotations (the
synthetic scenes, VOC, instance mask folders) with annotation ids renumbered 1..M: pycocotools'
matching uses 0 to mean "unmatched", so a ground-truth box with id 0 (labeling tools export ids
from 0) could never count as found.

Metric names: the 12 box figures (``AP``, ``AP50``, ...), ``AP/<class>``, and for Mask R-CNN
the same for masks under ``mask/`` (``mask/AP``, ``mask/AP/<class>``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from resvision.datasets.detection import DetectionAnnotations, coco_ground_truth
from resvision.tasks.engine import distributed as D
from resvision.tasks.engine.coco import (
    METRICS,
    Backend,
    COCOEvaluation,
    COCOResults,
    encode_masks,
    ground_truth_dict,
)
from resvision.tasks.engine.files import atomic_write_text
from resvision.tasks.engine.table import format_table
from resvision.tasks.engine.task import Evaluator

MASK = "mask/"  # prefix of the mask figures


def gt_coco_dict(ann: DetectionAnnotations, *, masks: bool = False) -> dict:
    """The ground truth as a COCO dict (original image and category ids, annotation ids 1..M),
    with each instance's segmentation when ``masks``."""
    gt = ground_truth_dict(
        ann,
        category_ids=ann.category_ids[ann.labels - 1],
        iscrowd=ann.iscrowd,
        areas=ann.areas,
        categories=[{"id": int(c), "name": n} for c, n in zip(ann.category_ids, ann.class_names)],
    )
    if masks:
        for j, a in enumerate(gt["annotations"]):
            seg = ann.segmentation(j) if ann.masks is not None else None
            x, y, w, h = a["bbox"]
            a["segmentation"] = seg or [[x, y, x, y + h, x + w, y + h, x + w, y]]
    return gt


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
    rows[:, 6] = np.asarray(category_ids)[np.asarray(labels, np.int64) - 1]
    return rows


def write_results(results: COCOResults, path: str | Path) -> Path:
    """COCO results json (the format COCO's evaluation server takes), written atomically: box
    records, with each detection's ``segmentation`` when the results hold masks. (For mask AP
    pycocotools needs the records without ``bbox``: with it, an instance's size range is taken
    from its box, not its mask.)"""
    records = results.records("bbox", decimals=True)
    if results.rles is not None:
        for record, seg in zip(records, results.segmentations()):
            record["segmentation"] = seg
    path = Path(path)
    atomic_write_text(path, json.dumps(records))
    return path


class COCOEvaluator:
    """COCO box AP/AR (and mask AP/AR for results with masks) against a ground truth.

    ``source`` is a COCO json path, or annotations: those read from a json (``read_coco``) are
    scored against the json itself, exactly as pycocotools scores it; others (synthetic, VOC,
    mask folders) against a COCO dict built from them. ``ground_truth`` (a COCO dict) overrides
    both. ``masks`` keeps the segmentations (needed for mask AP).
    """

    def __init__(
        self,
        source: DetectionAnnotations | str | os.PathLike,
        backend: Backend = "vernier",
        ground_truth: dict | None = None,
        *,
        masks: bool = False,
    ) -> None:
        if ground_truth is None:
            if isinstance(source, DetectionAnnotations) and not source.source:
                ground_truth = gt_coco_dict(source, masks=masks)
            else:
                path = source.source if isinstance(source, DetectionAnnotations) else source
                ground_truth = coco_ground_truth(path, segmentations=masks)
        self.gt_dict = ground_truth
        self.coco = COCOEvaluation(ground_truth, backend)
        self.backend = backend
        self.class_names = {int(c["id"]): c["name"] for c in ground_truth.get("categories", [])}

    @property
    def last_eval(self):
        return self.coco.last_eval

    def evaluate(self, results: np.ndarray | COCOResults) -> dict[str, float]:
        """The 12 COCO numbers plus ``AP/<class>`` (AP over IoU .50:.95, all areas, 100 dets,
        for classes with ground truth); for results with masks the same for masks under
        ``mask/``. ``results`` are ``(D, 7)`` rows or :class:`COCOResults`."""
        if not isinstance(results, COCOResults):
            results = COCOResults(np.asarray(results, np.float64).reshape(-1, 7))
        out: dict[str, float] = {}
        iou_types = ("bbox", "segm") if results.rles is not None else ("bbox",)
        for iou_type in iou_types:
            prefix = MASK if iou_type == "segm" else ""
            scores = self.coco.evaluate(results, iou_type)
            out |= {prefix + k: v for k, v in scores.stats.items()}
            for cat, ap in scores.per_category.items():
                if ap is not None or len(results) == 0:
                    out[f"{prefix}AP/{self.class_names[cat]}"] = ap or 0.0
        return out


def _percent(value: float) -> float | str:
    """A COCO figure in percent; COCO's -1 (no objects of that size or class) shows as "-"."""
    return "-" if value < 0 or np.isnan(value) else round(100 * value, 2)


def ap_table(metrics: dict[str, float], class_names: Sequence[str]) -> str:
    """The COCO summary (box, and mask when there) and a per-class AP table (percent; "-"
    where COCO has no figure)."""
    kinds = [("box", "")] + ([("mask", MASK)] if f"{MASK}AP" in metrics else [])
    head = ("", *METRICS) if len(kinds) > 1 else METRICS
    rows = [
        ([kind] if len(kinds) > 1 else []) + [_percent(metrics[p + m]) for m in METRICS]
        for kind, p in kinds
    ]
    summary = format_table(head, rows, floatfmt=".2f")
    per_class = []
    for n in class_names:
        if f"AP/{n}" not in metrics or np.isnan(metrics[f"AP/{n}"]):
            continue
        per_class.append([n] + [_percent(metrics.get(f"{p}AP/{n}", -1.0)) for _, p in kinds])
    columns = ("class", "AP") if len(kinds) == 1 else ("class", "box AP", "mask AP")
    return summary + "\n\n" + format_table(columns, per_class, floatfmt=".2f")


class DetectionEvaluator(Evaluator):
    """COCO box (and mask) AP/AR of the predictions on an annotated set, gathered over ranks.

    ``process(batch, results)`` takes the batch's dataset ``indices`` and one result dict per
    image (``boxes`` xyxy in the image's pixels, ``scores``, contiguous ``labels``, and for
    Mask R-CNN ``masks`` (K, H, W) probabilities, kept as RLE at ``mask_threshold``);
    :meth:`write_report` writes the COCO results json and the per-class AP table.
    """

    def __init__(
        self,
        ann: DetectionAnnotations,
        backend: Backend = "vernier",
        ground_truth: dict | None = None,
        *,
        masks: bool = False,
        mask_threshold: float = 0.5,
    ) -> None:
        self.ann = ann
        self.masks = masks
        self.mask_threshold = mask_threshold
        self.coco = COCOEvaluator(ann, backend, ground_truth, masks=masks)
        self.last_results: COCOResults | None = None
        self.last_metrics: dict[str, float] = {}
        self.reset()

    def reset(self) -> None:
        self.parts: list[COCOResults] = []

    def process(self, batch: dict[str, Any], results: Sequence[dict]) -> None:
        for i, r in zip(batch["indices"], results):
            rows = detections_to_rows(
                int(self.ann.image_ids[i]),
                r["boxes"].float().cpu().numpy(),
                r["scores"].float().cpu().numpy(),
                r["labels"].cpu().numpy(),
                self.ann.category_ids,
            )
            if not self.masks:
                self.parts.append(COCOResults(rows))
                continue
            masks = (r["masks"] > self.mask_threshold).cpu().numpy()
            size = (int(self.ann.heights[i]), int(self.ann.widths[i]))
            self.parts.append(COCOResults(rows, encode_masks(masks), np.tile(size, (len(rows), 1))))

    def evaluate(self) -> dict[str, float]:
        local = COCOResults.concatenate(self.parts)
        if self.masks and local.rles is None:  # no image on this rank
            local = COCOResults(local.rows, [], np.zeros((0, 2), np.int64))
        parts = D.gather_objects(local)  # every rank's predictions before scoring
        metrics = None
        if D.current().is_main:
            self.last_results = COCOResults.concatenate(parts)
            metrics = self.coco.evaluate(self.last_results)
        self.last_metrics = D.broadcast_object(metrics)
        return self.last_metrics

    def write_report(self, folder: Path) -> str | None:
        if self.last_results is None:
            return None
        write_results(self.last_results, Path(folder) / "predictions.json")
        table = ap_table(self.last_metrics, self.ann.class_names)
        atomic_write_text(Path(folder) / "ap.md", table + "\n")
        return table
