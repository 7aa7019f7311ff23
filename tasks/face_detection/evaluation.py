"""Face-detection metrics: the WIDER FACE validation protocol, and COCO-style box AP with a
normalized landmark error for annotated json (and synthetic) sets.

The WIDER FACE protocol is the official evaluation (``evaluation.py`` of the WIDER FACE kit,
as RetinaFace's repositories ship it) computed with array operations instead of its loops:

- scores are normalized over the whole set, ``(s - min) / (max - min)``, with the official
  starting values (max from 0, min from 1);
- per image, IoU with widths ``x2 - x1 + 1``; each prediction, in the given order, takes its
  best-overlapping face; at IoU >= 0.5 a face outside the setting's keep list makes the
  prediction not count, a kept face is recalled the first time;
- for 1000 thresholds ``1 - (t + 1) / 1000``, the last prediction scoring at least the
  threshold fixes the counted predictions and recalled faces up to it; summed over images,
  precision and recall (over the kept faces) give a VOC AP (precision envelope) per setting.

Per-image work is a few array operations; the thresholds are found with one search of the
running maximum of the scores, so a full val set scores in seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from resvision.datasets.face_detection import WIDER_SETTINGS, FaceAnnotations, WiderValSet
from resvision.tasks.engine import distributed as D
from resvision.tasks.engine.coco import (
    BACKENDS,
    Backend,
    COCOEvaluation,
    COCOResults,
    ground_truth_dict,
)
from resvision.tasks.engine.table import format_table
from resvision.tasks.engine.task import Evaluator

COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")


# -- the WIDER FACE protocol -------------------------------------------------------------------
def normalize_scores(predictions: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The official ``norm_score``: every image's scores mapped with the set's min and max
    (the max starts from 0, the min from 1, as there)."""
    lows = [p[:, 4].min() for p in predictions if len(p)]
    highs = [p[:, 4].max() for p in predictions if len(p)]
    low, high = min([1.0, *lows]), max([0.0, *highs])
    out = []
    for p in predictions:
        p = np.array(p, np.float64).reshape(-1, 5)
        if len(p):
            p[:, 4] = (p[:, 4] - low) / (high - low)
        out.append(p)
    return out


def pixel_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(A, 4)`` and ``(B, 4)`` xyxy -> ``(A, B)`` IoU with widths ``x2 - x1 + 1`` (the WIDER
    kit's ``bbox_overlaps``; non-overlapping pairs are 0)."""
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    inter = iw * ih
    overlap = (iw > 0) & (ih > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (area_a[:, None] + area_b[None, :] - inter)
    return np.where(overlap, iou, 0.0)


def image_pr(
    pred: np.ndarray,
    gt: np.ndarray,
    keeps: Sequence[np.ndarray],
    thresholds: np.ndarray,
    iou_threshold: float = 0.5,
) -> np.ndarray:
    """One image's ``(S, T, 2)`` counts (counted predictions, recalled faces) for each keep
    list (1-based face indices) and threshold; ``pred (P, 5)`` xywh + normalized score in the
    given order, ``gt (G, 4)`` xywh."""
    p = pred[:, :4].copy()
    p[:, 2:] += p[:, :2]
    g = np.asarray(gt, np.float64).copy()
    g[:, 2:] += g[:, :2]
    overlaps = pixel_iou(p, g)
    best = overlaps.argmax(1)
    matched = overlaps[np.arange(len(p)), best] >= iou_threshold
    # the last prediction with score >= t: the count of the scores' running maximum from the
    # end that reach t (that maximum never increases)
    reach = np.maximum.accumulate(pred[::-1, 4])[::-1]
    last = np.searchsorted(-reach, -thresholds, side="right") - 1  # (T,), -1 = none
    out = np.zeros((len(keeps), len(thresholds), 2))
    for s, keep in enumerate(keeps):
        kept = np.zeros(len(g), bool)
        kept[np.asarray(keep, np.int64).reshape(-1) - 1] = True
        counted = ~(matched & ~kept[best])
        hit = np.flatnonzero(matched & kept[best])
        first = np.zeros(len(p), np.int64)
        first[hit[np.unique(best[hit], return_index=True)[1]]] = 1
        some = last >= 0
        out[s, some, 0] = np.cumsum(counted)[last[some]]
        out[s, some, 1] = np.cumsum(first)[last[some]]
    return out


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope at the points where recall changes (the kit's)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def wider_face_ap(
    val: WiderValSet,
    predictions: Sequence[np.ndarray],
    *,
    iou_threshold: float = 0.5,
    num_thresholds: int = 1000,
) -> dict[str, float]:
    """AP per setting (easy, medium, hard) of ``predictions[i]``: ``(P, 5)`` rows ``x, y, w, h,
    score`` for image ``i`` of ``val``, best first (as the per-image txt files list them)."""
    if len(predictions) != len(val):
        raise ValueError(f"{len(predictions)} prediction lists for {len(val)} images")
    preds = normalize_scores(predictions)
    thresholds = 1 - (np.arange(num_thresholds) + 1) / num_thresholds
    curve = np.zeros((len(WIDER_SETTINGS), num_thresholds, 2))
    faces = np.zeros(len(WIDER_SETTINGS))
    for i, pred in enumerate(preds):
        keeps = [val.keep[s][i] for s in WIDER_SETTINGS]
        faces += [len(k) for k in keeps]
        if len(val.boxes[i]) == 0 or len(pred) == 0:
            continue
        curve += image_pr(pred, val.boxes[i], keeps, thresholds, iou_threshold)
    out = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for s, name in enumerate(WIDER_SETTINGS):
            precision = curve[s, :, 1] / curve[s, :, 0]
            recall = curve[s, :, 1] / faces[s]
            out[name] = voc_ap(recall, precision)
    return out


def wider_rows(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Detections (xyxy, scores) -> ``(D, 5)`` float64 ``x, y, w, h, score`` rows."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    s = np.asarray(scores, np.float64).reshape(-1, 1)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2], s], 1)


def write_wider_txt(
    folder: str | Path, val: WiderValSet, predictions: Sequence[np.ndarray]
) -> Path:
    """The official per-image layout: ``folder/EVENT/NAME.txt`` holding the image name, the
    number of detections and one ``x y w h score`` line each (values written exactly, so the
    official code reads back the numbers scored here)."""
    folder = Path(folder)
    for i, rows in enumerate(predictions):
        path = folder / val.events[i] / f"{val.names[i]}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [val.names[i], str(len(rows))]
        lines += [" ".join(repr(float(v)) for v in row) for row in np.asarray(rows)]
        path.write_text("\n".join(lines) + "\n")
    return folder


class WiderFaceEvaluator(Evaluator):
    """The WIDER FACE val protocol on the images of a :class:`WiderValSet`: ``easy``,
    ``medium``, ``hard`` AP, and ``AP50`` (the hard setting, which counts every face the other
    two do and more: the figure that selects ``best.pt``).

    :meth:`write_report` writes the official per-image txt files and the AP table.
    """

    def __init__(self, val: WiderValSet) -> None:
        self.val = val
        self.last: list[np.ndarray] | None = None
        self.last_metrics: dict[str, float] = {}
        self.reset()

    def reset(self) -> None:
        self.found: dict[int, np.ndarray] = {}

    def process(self, batch: dict[str, Any], results: Sequence[dict]) -> None:
        for i, r in zip(batch["indices"], results):
            self.found[int(i)] = wider_rows(
                r["boxes"].float().cpu().numpy(), r["scores"].float().cpu().numpy()
            )

    def evaluate(self) -> dict[str, float]:
        parts = D.gather_objects(self.found)
        metrics = None
        if D.current().is_main:
            found = {k: v for part in parts for k, v in part.items()}
            empty = np.zeros((0, 5))
            self.last = [found.get(i, empty) for i in range(len(self.val))]
            metrics = wider_face_ap(self.val, self.last)
            metrics["AP50"] = metrics["hard"]
        self.last_metrics = D.broadcast_object(metrics)
        return self.last_metrics

    def write_report(self, folder: Path) -> str | None:
        if self.last is None:
            return None
        Path(folder).mkdir(parents=True, exist_ok=True)
        write_wider_txt(Path(folder) / "widerface_txt", self.val, self.last)
        m = self.last_metrics
        table = format_table(
            ("easy", "medium", "hard"),
            [[round(100 * m[s], 2) for s in WIDER_SETTINGS]],
            floatfmt=".2f",
        )
        (Path(folder) / "wider_ap.md").write_text(table + "\n")
        return table


# -- COCO-style box AP and landmark error ------------------------------------------------------
def faces_coco_dict(ann: FaceAnnotations) -> dict:
    """Faces as a COCO ground-truth dict (one category, ``face``; ignored faces as crowd)."""
    return ground_truth_dict(
        ann,
        category_ids=np.ones(ann.num_boxes, np.int64),
        iscrowd=ann.ignore,
        categories=[{"id": 1, "name": "face"}],
    )


def coco_box_ap(
    ground_truth: dict, rows: np.ndarray, backend: Backend = "vernier"
) -> dict[str, float]:
    """COCO box AP/AR of ``(D, 7)`` result rows ``image_id, x, y, w, h, score, category``
    against a ground-truth dict (every category scored together), through the shared COCO
    evaluation (:mod:`resvision.tasks.engine.coco`)."""
    rows = np.asarray(rows, np.float64).reshape(-1, 7)
    scores = COCOEvaluation(ground_truth, backend, use_cats=False).evaluate(COCOResults(rows))
    return {name: scores.stats[name] for name in COCO_METRICS}


def landmark_error(
    ann: FaceAnnotations, found: dict[int, dict[str, np.ndarray]], iou_threshold: float = 0.5
) -> tuple[float, int]:
    """Normalized mean error of the landmarks: each annotated face with landmarks is matched to
    the best-scoring unmatched detection overlapping it at ``iou_threshold`` (greedy, by
    score); its error is the mean distance of the five points divided by ``sqrt(w * h)`` of its
    box. Returns ``(mean error, number of faces matched)``."""
    errors = []
    for i, r in found.items():
        rows = ann.rows(i)
        usable = ann.has_landmarks[rows] & ~ann.ignore[rows]
        gt_boxes = ann.boxes[rows][usable].astype(np.float64)
        gt_points = ann.landmarks[rows][usable]
        if not len(gt_boxes) or not len(r["scores"]):
            continue
        boxes = np.asarray(r["boxes"], np.float64)
        lt = np.maximum(boxes[:, None, :2], gt_boxes[None, :, :2])
        rb = np.minimum(boxes[:, None, 2:], gt_boxes[None, :, 2:])
        inter = np.prod(np.clip(rb - lt, 0, None), -1)
        area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
        iou = inter / (area(boxes)[:, None] + area(gt_boxes)[None] - inter)
        free = np.ones(len(gt_boxes), bool)
        for d in np.argsort(-np.asarray(r["scores"]), kind="stable"):
            candidates = np.where(free & (iou[d] >= iou_threshold), iou[d], -1)
            g = int(candidates.argmax())
            if candidates[g] < 0:
                continue
            free[g] = False
            w, h = gt_boxes[g, 2] - gt_boxes[g, 0], gt_boxes[g, 3] - gt_boxes[g, 1]
            distance = np.linalg.norm(r["landmarks"][d] - gt_points[g], axis=-1).mean()
            errors.append(distance / np.sqrt(max(w * h, 1e-12)))
    return (float(np.mean(errors)) if errors else float("nan")), len(errors)


class FaceBoxEvaluator(Evaluator):
    """COCO box AP/AR (one class, faces) and ``NME``, the normalized mean landmark error
    (lower is better), of predictions on an annotated set. ``ground_truth`` is the json's own
    content when there is one (scored as pycocotools would); otherwise built from ``ann``."""

    def __init__(
        self,
        ann: FaceAnnotations,
        backend: Backend = "vernier",
        ground_truth: dict | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"evaluation backend {backend!r}: choose one of {list(BACKENDS)}")
        self.ann = ann
        self.backend = backend
        self.gt = ground_truth if ground_truth is not None else faces_coco_dict(ann)
        self.last: dict[int, dict[str, np.ndarray]] | None = None
        self.last_metrics: dict[str, float] = {}
        self.reset()

    def reset(self) -> None:
        self.found: dict[int, dict[str, np.ndarray]] = {}

    def process(self, batch: dict[str, Any], results: Sequence[dict]) -> None:
        for i, r in zip(batch["indices"], results):
            self.found[int(i)] = {
                k: r[k].float().cpu().numpy() for k in ("boxes", "scores", "landmarks")
            }

    def rows(self, found: dict[int, dict[str, np.ndarray]]) -> np.ndarray:
        parts = []
        for i, r in sorted(found.items()):
            b = r["boxes"].astype(np.float64).reshape(-1, 4)
            block = np.empty((len(b), 7))
            block[:, 0] = self.ann.image_ids[i]
            block[:, 1:3] = b[:, :2]
            block[:, 3:5] = b[:, 2:] - b[:, :2]
            block[:, 5] = r["scores"]
            block[:, 6] = 1
            parts.append(block)
        return np.concatenate(parts) if parts else np.zeros((0, 7))

    def evaluate(self) -> dict[str, float]:
        parts = D.gather_objects(self.found)
        metrics = None
        if D.current().is_main:
            self.last = {k: v for part in parts for k, v in part.items()}
            metrics = coco_box_ap(self.gt, self.rows(self.last), self.backend)
            metrics["NME"], _ = landmark_error(self.ann, self.last)
        self.last_metrics = D.broadcast_object(metrics)
        return self.last_metrics

    def write_report(self, folder: Path) -> str | None:
        if self.last is None:
            return None
        Path(folder).mkdir(parents=True, exist_ok=True)
        m = self.last_metrics
        shown = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")
        cells = [("-" if m[k] < 0 else round(100 * m[k], 2)) for k in shown]
        table = format_table((*shown, "NME"), [[*cells, round(m["NME"], 4)]], floatfmt=".2f")
        (Path(folder) / "ap.md").write_text(table + "\n")
        return table
