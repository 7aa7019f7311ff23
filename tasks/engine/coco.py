"""COCO evaluation (box and mask AP/AR) for every task that reports it.

One place computes COCO's numbers from a ground truth and flat results:

- the ground truth is a COCO dict (a json's own content, or one built from annotations); build
  it with annotation ids ``1..M`` (pycocotools' matching takes id 0 for "unmatched": a ground
  truth with id 0 could never be found, see ``datasets.detection.coco_ground_truth``);
- results are :class:`COCOResults`: ``(D, 7)`` rows ``image_id, x, y, w, h, score,
  category_id`` and, for masks, each detection's RLE (COCO's compressed counts, at its image's
  size; :func:`encode_masks`);
- three backends give identical numbers: ``vernier`` (default: a compiled evaluator whose
  strict mode reproduces pycocotools bit for bit; about 0.03x pycocotools' CPU time for boxes,
  see BENCHMARKS.md), ``faster_coco_eval`` and ``pycocotools`` (the reference).

Mask results are scored as pycocotools scores a results list without ``bbox`` (torchvision's and
detectron2's evaluation do the same): a detection's area, which decides the small / medium /
large ranges, is its mask's.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from resvision.datasets.annotations import BoxAnnotations

logging.getLogger("faster_coco_eval").setLevel(logging.WARNING)  # its summary is ours to print

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = ("bbox", "segm")
BACKENDS = ("vernier", "faster_coco_eval", "pycocotools")
Backend = Literal["vernier", "faster_coco_eval", "pycocotools"]
IouType = Literal["bbox", "segm"]


def ground_truth_dict(
    ann: BoxAnnotations,
    *,
    category_ids: np.ndarray,
    iscrowd: np.ndarray,
    categories: list[dict],
    areas: np.ndarray | None = None,
) -> dict:
    """Compact annotations as a COCO ground-truth dict: the images with their source ids and
    sizes, box ``j`` as annotation ``j + 1`` (xywh) with ``category_ids[j]`` and
    ``iscrowd[j]``; its area is ``areas[j]`` (the source's) or, without them, the box's."""
    images = [
        {"id": int(i), "file_name": ann.file_name(n), "height": int(h), "width": int(w)}
        for n, (i, h, w) in enumerate(zip(ann.image_ids, ann.heights, ann.widths))
    ]
    image_of_box = np.repeat(ann.image_ids, np.diff(ann.offsets))
    b = ann.boxes.astype(np.float64)
    if areas is None:
        areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    annotations = [
        {
            "id": j + 1,
            "image_id": int(image_of_box[j]),
            "category_id": int(category_ids[j]),
            "bbox": [b[j, 0], b[j, 1], b[j, 2] - b[j, 0], b[j, 3] - b[j, 1]],
            "area": float(
                areas[j] if areas is not None else (b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1])
            ),
            "iscrowd": int(iscrowd[j]),
        }
        for j in range(ann.num_boxes)
    ]
    return {"images": images, "annotations": annotations, "categories": categories}


@dataclass
class COCOResults:
    """Detections of a whole set: ``rows (D, 7)`` float64 ``image_id, x, y, w, h, score,
    category_id`` and, for mask evaluation, ``rles`` (D compressed RLE counts, bytes) with the
    ``(height, width)`` of each one's image in ``sizes (D, 2)``."""

    rows: np.ndarray
    rles: list[bytes] | None = None
    sizes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def concatenate(cls, parts: Sequence[COCOResults]) -> COCOResults:
        rows = np.concatenate([p.rows for p in parts]) if parts else np.zeros((0, 7))
        if not parts or any(p.rles is None for p in parts):
            return cls(rows.reshape(-1, 7))
        return cls(
            rows.reshape(-1, 7),
            [r for p in parts for r in p.rles],
            np.concatenate([p.sizes for p in parts]).reshape(-1, 2),
        )

    def segmentations(self) -> list[dict]:
        """The RLEs as COCO ``segmentation`` values (compressed counts as text)."""
        assert self.rles is not None and self.sizes is not None
        return [
            {"size": [int(h), int(w)], "counts": r.decode("ascii")}
            for r, (h, w) in zip(self.rles, self.sizes)
        ]

    def records(self, iou_type: IouType = "bbox", *, decimals: bool = False) -> list[dict]:
        """COCO result records (what ``loadRes`` and COCO's server take): ``image_id``,
        ``category_id``, ``score`` and ``bbox`` (bbox) or ``segmentation`` (segm, no
        ``bbox``: the area is the mask's). ``decimals`` rounds boxes to 3 decimals and scores
        to 5, for files."""
        rows = self.rows
        records = [
            {"image_id": int(r[0]), "category_id": int(r[6]), "score": float(r[5])} for r in rows
        ]
        if iou_type == "segm":
            for rec, seg in zip(records, self.segmentations()):
                rec["segmentation"] = seg
            return records
        for rec, r in zip(records, rows):
            rec["bbox"] = [float(v) for v in r[1:5]]
            if decimals:
                rec["bbox"] = [round(v, 3) for v in rec["bbox"]]
        if decimals:
            for rec in records:
                rec["score"] = round(rec["score"], 5)
        return records


def encode_masks(masks: np.ndarray) -> list[bytes]:
    """``(K, H, W)`` boolean (or 0/1) masks -> K compressed RLE counts (pycocotools')."""
    from pycocotools import mask as mask_utils

    masks = np.asarray(masks)
    if masks.shape[0] == 0:
        return []
    encoded = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [e["counts"] for e in encoded]


@dataclass
class COCOScores:
    """What one evaluation gives: the 12 COCO numbers and each category's AP (IoU .50:.95, all
    areas, 100 detections; None where the category has no ground truth)."""

    stats: dict[str, float]
    per_category: dict[int, float | None] = field(default_factory=dict)


class COCOEvaluation:
    """Evaluates results against one ground truth (a COCO dict), box or mask IoU, with one of
    :data:`BACKENDS`; the ground truth is parsed once per backend and kept for the next call.
    ``use_cats=False`` scores every category as one (COCO's ``params.useCats = 0``)."""

    def __init__(
        self, ground_truth: dict, backend: Backend = "vernier", *, use_cats: bool = True
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"COCO evaluation backend {backend!r}: choose one of {list(BACKENDS)}")
        self.gt = ground_truth
        self.backend = backend
        self.use_cats = use_cats
        self.category_ids = sorted(int(c["id"]) for c in ground_truth.get("categories", []))
        self._parsed = None
        self.last_eval = None  # the backend's evaluation object (pycocotools-like backends)

    def evaluate(self, results: COCOResults, iou_type: IouType = "bbox") -> COCOScores:
        if iou_type not in IOU_TYPES:
            raise ValueError(f"COCO iou type {iou_type!r}: choose one of {list(IOU_TYPES)}")
        if iou_type == "segm" and results.rles is None:
            raise ValueError("mask evaluation (segm) needs results with masks (rles)")
        if len(results) == 0:  # nothing detected: every figure 0, as COCO reports none
            return COCOScores(dict.fromkeys(METRICS, 0.0), dict.fromkeys(self.category_ids))
        run = {
            "vernier": self._vernier,
            "faster_coco_eval": self._faster_coco_eval,
            "pycocotools": self._pycocotools,
        }[self.backend]
        stats, precision = run(results, iou_type)
        per_category = {}
        cat_ids = self.category_ids if self.use_cats else []
        for k, cat in enumerate(cat_ids):
            p = precision[:, :, k, 0, -1]
            p = p[p > -1]
            per_category[cat] = float(p.mean()) if p.size else None
        return COCOScores({m: float(v) for m, v in zip(METRICS, stats[:12])}, per_category)

    # -- backends: each returns the 12 stats and the precision array (T, R, K, A, M) ---------
    def _vernier(self, results: COCOResults, iou_type: IouType):
        from vernier import _core

        if self._parsed is None:
            import orjson

            self._parsed = _core.CocoDataset.from_json(
                orjson.dumps(self.gt, option=orjson.OPT_SERIALIZE_NUMPY)
            )
        common = {"parity_mode": "strict", "max_dets_per_image": 100, "use_cats": self.use_cats}
        if iou_type == "bbox":
            rows = np.ascontiguousarray(results.rows, np.float64)
            grid = _core.evaluate_bbox_grid(self._parsed, rows, dt_area="bbox", **common)
        else:
            grid = _core.evaluate_segm_grid(
                self._parsed, _vernier_masks(results), dt_area="mask", **common
            )
        accumulated = grid.accumulate([1, 10, 100])
        stats = np.asarray(accumulated.summarize([1, 10, 100]).stats)
        return stats, np.asarray(accumulated.precision)

    def _faster_coco_eval(self, results: COCOResults, iou_type: IouType):
        from faster_coco_eval import COCO, COCOeval_faster

        with contextlib.redirect_stdout(io.StringIO()):
            if self._parsed is None:
                self._parsed = COCO(copy.deepcopy(self.gt))
            gt = self._parsed
            dt = gt.loadRes(results.rows if iou_type == "bbox" else results.records("segm"))
            return self._run(COCOeval_faster(gt, dt, iou_type))

    def _pycocotools(self, results: COCOResults, iou_type: IouType):
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO()
            gt.dataset = copy.deepcopy(self.gt)  # its mask evaluation rewrites the annotations
            gt.createIndex()
            dt = gt.loadRes(results.rows if iou_type == "bbox" else results.records("segm"))
            return self._run(COCOeval(gt, dt, iou_type))

    def _run(self, ev):
        if not self.use_cats:
            ev.params.useCats = 0
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        self.last_eval = ev
        return np.asarray(ev.stats), np.asarray(ev.eval["precision"])


def _vernier_masks(results: COCOResults) -> list[dict]:
    """Per-image mask detections as vernier's arrays. Mask IoU reads the masks, scores and
    labels only; the boxes given are the results' own (a results file's ``bbox``)."""
    rows = results.rows
    order = np.argsort(rows[:, 0], kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(rows[order, 0]) != 0])
    with gc_paused():  # one small dict a mask: no collections over everything already held
        return [
            _image_masks(results, order[s:e]) for s, e in zip(starts, [*starts[1:], len(order)])
        ]


def _image_masks(results: COCOResults, idx: np.ndarray) -> dict:
    rows = results.rows
    size = (int(results.sizes[idx[0], 0]), int(results.sizes[idx[0], 1]))  # the image's
    return {
        "image_id": int(rows[idx[0], 0]),
        "boxes": np.ascontiguousarray(rows[idx, 1:5], np.float64),
        "scores": np.ascontiguousarray(rows[idx, 5], np.float64),
        "labels": rows[idx, 6].astype(np.int64),
        "rles": [{"counts": results.rles[i], "size": size} for i in idx.tolist()],
    }


@contextlib.contextmanager
def gc_paused():
    """The cyclic garbage collector paused: building many small objects would otherwise run
    full collections over everything in memory."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
