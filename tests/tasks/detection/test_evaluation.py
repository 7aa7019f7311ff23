"""COCO evaluation: id-0 annotations, and faster-coco-eval == pycocotools."""

from __future__ import annotations

import numpy as np
import pytest

from resvision.datasets.detection import read_coco
from resvision.tasks.detection.evaluation import METRICS, COCOEvaluator, detections_to_rows


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


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
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
    a = COCOEvaluator(ann, "faster_coco_eval").evaluate(rows)
    b = COCOEvaluator(ann, "pycocotools").evaluate(rows)
    assert set(a) == set(b)
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-9), key
    assert 0.1 < a["AP"] < 0.95
    assert all(m in a for m in METRICS)
