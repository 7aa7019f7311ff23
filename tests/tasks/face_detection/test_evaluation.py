"""Face-detection metrics: the vectorized WIDER FACE protocol equals the official algorithm
(``widerface_reference``) on generated ground truth and predictions, through the per-image txt
files; COCO box AP equals pycocotools; the landmark error is what it says."""

from __future__ import annotations

import numpy as np
import pytest

from resvision.datasets.face_detection import pack_faces, read_wider_val
from resvision.tasks.face_detection.evaluation import (
    COCO_METRICS,
    FaceBoxEvaluator,
    coco_box_ap,
    faces_coco_dict,
    landmark_error,
    wider_face_ap,
    wider_rows,
    write_wider_txt,
)

from .wider_generated import generated_predictions, write_wider_mats
from .widerface_reference import evaluation as reference_evaluation


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wider_protocol_equals_the_official_algorithm(seed, tmp_path):
    (tmp_path / "gt").mkdir()
    write_wider_mats(tmp_path / "gt", seed)
    val = read_wider_val(tmp_path / "gt")
    assert len(val) == 24 and val.names[0] == "0_Event_0_0" and val.events[-1] == "3--Event3"
    for shuffle in (False, True):  # the protocol scores predictions in the order given
        preds = generated_predictions(val, seed, shuffle=shuffle)
        write_wider_txt(tmp_path / f"txt{shuffle}", val, preds)
        ours = wider_face_ap(val, preds)
        ref = reference_evaluation(str(tmp_path / f"txt{shuffle}"), str(tmp_path / "gt"))
        assert [ours[s] for s in ("easy", "medium", "hard")] == pytest.approx(ref, abs=1e-12)
        assert 0.05 < ours["hard"] < 0.999  # a curve, not a corner case


def test_wider_protocol_scores_perfect_predictions_one(tmp_path):
    write_wider_mats(tmp_path, 3)
    val = read_wider_val(tmp_path)
    preds = [np.c_[b, np.linspace(1, 0.5, len(b))] for b in val.boxes]
    ap = wider_face_ap(val, preds)
    assert ap["easy"] == pytest.approx(1.0) and ap["hard"] == pytest.approx(1.0)


def test_wider_txt_layout(tmp_path):
    (tmp_path / "gt").mkdir()
    write_wider_mats(tmp_path / "gt", 4)
    val = read_wider_val(tmp_path / "gt")
    rows = wider_rows(np.array([[10.0, 20.0, 50.5, 80.25]]), np.array([0.875], np.float32))
    write_wider_txt(tmp_path / "txt", val, [rows] + [np.zeros((0, 5))] * (len(val) - 1))
    lines = (tmp_path / "txt" / val.events[0] / f"{val.names[0]}.txt").read_text().splitlines()
    assert lines == [val.names[0], "1", "10.0 20.0 40.5 60.25 0.875"]


def test_a_missing_mat_file_is_named(tmp_path):
    write_wider_mats(tmp_path, 0)
    (tmp_path / "wider_medium_val.mat").unlink()
    with pytest.raises(ValueError, match="wider_medium_val.mat"):
        read_wider_val(tmp_path)


def _faces():
    rng = np.random.default_rng(0)
    faces = []
    for _ in range(8):
        image = []
        for _ in range(int(rng.integers(0, 5))):
            x, y = rng.uniform(0, 200, 2)
            w = rng.uniform(3, 120)
            box = [x, y, x + w, y + w * 1.2]
            points = np.array([x, y]) + rng.uniform(0, 1, (5, 2)) * [w, w * 1.2]
            image.append((box, points if rng.random() < 0.8 else None, rng.random() < 0.1, -1))
        faces.append(image)
    names = [f"{i}.jpg" for i in range(8)]
    return pack_faces(names, faces, heights=[256] * 8, widths=[256] * 8)


@pytest.mark.parametrize("backend", ["vernier", "faster_coco_eval", "pycocotools"])
def test_face_box_ap_equals_pycocotools(backend):
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ann = _faces()
    gt_dict = faces_coco_dict(ann)
    rng = np.random.default_rng(1)
    rows = []
    for a in gt_dict["annotations"]:
        if rng.random() < 0.8:
            rows.append(
                [a["image_id"], *(np.array(a["bbox"]) + rng.normal(0, 2, 4)), rng.random(), 1]
            )
    rows.append([1, 5, 5, 30, 30, 0.9, 1])
    rows = np.array(rows)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(rows), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    ours = coco_box_ap(gt_dict, rows, backend)
    np.testing.assert_allclose([ours[k] for k in COCO_METRICS], ev.stats[:9], atol=1e-9)


def test_landmark_error_is_zero_on_the_truth_and_grows_with_shifts():
    ann = _faces()
    found = {}
    for i in range(len(ann)):
        r = ann.rows(i)
        found[i] = {
            "boxes": ann.boxes[r],
            "scores": np.linspace(1, 0.5, r.stop - r.start),
            "landmarks": ann.landmarks[r].copy(),
        }
    error, matched = landmark_error(ann, found)
    usable = int((ann.has_landmarks & ~ann.ignore).sum())
    assert error == pytest.approx(0.0) and matched == usable > 5
    for r in found.values():
        r["landmarks"] += 3.0  # every point 3 * sqrt(2) px off
    sizes = np.sqrt(np.prod(ann.boxes[:, 2:] - ann.boxes[:, :2], 1))[
        ann.has_landmarks & ~ann.ignore
    ]
    error, _ = landmark_error(ann, found)
    assert error == pytest.approx(np.mean(3 * np.sqrt(2) / sizes), rel=1e-5)


def test_face_box_evaluator_reports_ap_and_nme():
    import torch

    ann = _faces()
    ev = FaceBoxEvaluator(ann)
    ev.reset()
    results = []
    for i in range(len(ann)):
        r = ann.rows(i)
        n = r.stop - r.start
        results.append(
            {
                "boxes": torch.from_numpy(ann.boxes[r]),
                "scores": torch.linspace(1, 0.5, n),
                "landmarks": torch.from_numpy(ann.landmarks[r]),
            }
        )
    ev.process({"indices": list(range(len(ann)))}, results)
    m = ev.evaluate()
    assert m["AP50"] == pytest.approx(1.0) and m["NME"] == pytest.approx(0.0)
