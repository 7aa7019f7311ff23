"""COCO evaluation of detectors: id-0 annotations, every backend == pycocotools, a json read for
training scored as the json itself, box and mask AP of a Mask R-CNN's outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from resvision.datasets.detection import read_coco, synthetic_annotations
from resvision.tasks.detection.evaluation import (
    METRICS,
    COCOEvaluator,
    DetectionEvaluator,
    ap_table,
    detections_to_rows,
    gt_coco_dict,
)


def _gt_rows(ann):
    return np.concatenate(
        [
            detections_to_rows(
                ann.image_ids[i],
                ann.boxes[ann.rows(i)],
                np.ones(len(ann.boxes[ann.rows(i)])),
                ann.labels[ann.rows(i)],
                ann.category_ids,
            )
            for i in range(len(ann))
        ]
    )


@pytest.mark.parametrize("backend", ["vernier", "faster_coco_eval", "pycocotools"])
def test_ground_truth_as_predictions_scores_ap_one_despite_zero_ids(voc_sample, backend):
    ann = read_coco(voc_sample / "instances_coco.json")
    assert 0 in ann.image_ids  # the labeling tool counted from 0
    metrics = COCOEvaluator(ann, backend).evaluate(_gt_rows(ann))
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AP/person"] == pytest.approx(1.0)


def test_backends_agree_on_perturbed_predictions(voc_sample):
    ann = read_coco(voc_sample / "instances_coco.json")
    rng = np.random.default_rng(0)
    rows = _gt_rows(ann)
    rows[:, 1:5] *= rng.uniform(0.85, 1.15, (len(rows), 4))
    rows[:, 5] = rng.random(len(rows))
    extra = rows.copy()
    extra[:, 1:3] += rng.uniform(-60, 60, (len(rows), 2))  # displaced duplicates: false positives
    extra[:, 5] *= 0.9
    flipped = rows[:3].copy()
    flipped[:, 6] = 3  # wrong class
    rows = np.concatenate([rows, extra, flipped])
    b = COCOEvaluator(ann, "pycocotools").evaluate(rows)
    for backend in ("vernier", "faster_coco_eval"):
        a = COCOEvaluator(ann, backend).evaluate(rows)
        assert set(a) == set(b)
        for key in a:
            assert a[key] == pytest.approx(b[key], abs=1e-9), key
    assert 0.1 < b["AP"] < 0.95
    assert all(m in b for m in METRICS)


def test_annotations_read_for_training_are_scored_as_their_json(tmp_path):
    """``COCOEvaluator(read_coco(json))`` gives pycocotools' numbers on the json itself, box and
    mask, though the annotations read for training clip boxes past the edge and drop tiny
    ones (scoring those instead, as before, gives AP 17.2 instead of 18.1 here); the json path
    gives the same."""
    from ..engine.test_coco import generated_coco, pycocotools_eval

    gt, results = generated_coco(seed=1)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    ann = read_coco(path, masks=True)
    assert ann.dropped_degenerate > 0
    for source in (ann, path):
        ours = COCOEvaluator(source, masks=True).evaluate(results)
        for iou_type, prefix in (("bbox", ""), ("segm", "mask/")):
            expected = pycocotools_eval(gt, results, iou_type).stats
            np.testing.assert_array_equal([ours[prefix + m] for m in METRICS], expected)
    # the annotations' own (clipped, filtered) boxes score differently: what the trap gave
    clipped = COCOEvaluator(ann, ground_truth=gt_coco_dict(ann)).evaluate(results.rows)
    assert clipped["AP"] != ours["AP"]


def test_mask_rcnn_outputs_are_scored_box_and_mask_per_class():
    """The evaluator turns a Mask R-CNN's outputs (probabilities at each image's size) into
    RLE at 0.5 and reports box and mask figures and per-class AP; the ground truth's own
    masks as predictions score mask AP 1 (synthetic scenes: exact masks)."""
    import torch

    ann = synthetic_annotations(6, 3)
    ev = DetectionEvaluator(ann, masks=True)
    for i in range(len(ann)):
        rows = ann.rows(i)
        h, w = int(ann.heights[i]), int(ann.widths[i])
        masks = ann.masks.rasterize(np.arange(rows.start, rows.stop), ann.boxes[rows], (h, w))
        probs = torch.from_numpy(masks.astype(np.float32)) * 0.9 + 0.05
        result = {
            "boxes": torch.from_numpy(ann.boxes[rows]),
            "scores": torch.linspace(0.9, 0.5, len(masks)),
            "labels": torch.from_numpy(ann.labels[rows]),
            "masks": probs,
        }
        ev.process({"indices": [i]}, [result])
    metrics = ev.evaluate()
    assert metrics["mask/AP"] == pytest.approx(1.0) and metrics["AP"] == pytest.approx(1.0)
    assert {f"mask/AP/{n}" for n in ann.class_names} & set(metrics)
    table = ap_table(metrics, ann.class_names)
    assert "| mask" in table and "mask AP" in table
