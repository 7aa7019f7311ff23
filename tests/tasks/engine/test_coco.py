"""The shared COCO evaluation against pycocotools itself: box and mask AP/AR and per-category
AP on a json with polygons (several parts, past the image edge), RLE with compressed and with
uncompressed counts, crowd regions and tiny boxes."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from resvision.tasks.engine.coco import (
    METRICS,
    COCOEvaluation,
    COCOResults,
    encode_masks,
)


def _polygon(rng, cx, cy, r, k):
    angles = np.sort(rng.uniform(0, 2 * np.pi, k))
    radii = r * rng.uniform(0.5, 1.0, k)
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).reshape(-1)


def generated_coco(seed: int = 0, num_images: int = 40) -> tuple[dict, COCOResults]:
    """A ground truth with every segmentation form (boxes past the edge, sub-pixel boxes) and
    results (jittered truths, duplicates,
    wrong classes, random masks) whose masks are what a model would give: RLE at image size."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    rows, rles, sizes = [], [], []
    for i in range(1, num_images + 1):
        h, w = int(rng.integers(60, 140)), int(rng.integers(60, 140))
        images.append({"id": i, "file_name": f"{i}.png", "height": h, "width": w})
        for _ in range(int(rng.integers(0, 6))):
            kind = rng.choice(["polygon", "parts", "edge", "rle", "crowd", "tiny"])
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            r = rng.uniform(4, 40)
            crowd = 0
            if kind in ("polygon", "tiny"):
                seg = [_polygon(rng, cx, cy, 1.5 if kind == "tiny" else r, 8).round(2).tolist()]
            elif kind == "parts":
                seg = [_polygon(rng, cx + d, cy, r / 2, 6).round(2).tolist() for d in (-r, r)]
            elif kind == "edge":  # a polygon reaching past the image edge
                seg = [_polygon(rng, rng.choice([-5.0, w + 5.0]), cy, r, 10).round(2).tolist()]
            else:
                m = np.zeros((h, w), np.uint8)
                x0, y0 = int(max(cx - r, 0)), int(max(cy - r, 0))
                m[y0 : int(cy + r), x0 : int(cx + r)] = (
                    rng.random((h, w))[y0 : int(cy + r), x0 : int(cx + r)] < 0.8
                )
                if not m.any():
                    continue
                rle = mask_utils.encode(np.asfortranarray(m))
                if kind == "crowd":  # crowd regions are written with uncompressed counts
                    crowd = 1
                    flat = m.reshape(-1, order="F")
                    change = np.flatnonzero(np.diff(np.r_[0, flat, 1 - flat[-1]]) != 0)
                    counts = np.diff(np.r_[0, change]).tolist()
                    seg = {"size": [h, w], "counts": counts}
                else:
                    seg = {"size": [h, w], "counts": rle["counts"].decode()}
            if isinstance(seg, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
            elif isinstance(seg["counts"], list):
                rle = mask_utils.frPyObjects(seg, h, w)
            else:
                rle = {"size": seg["size"], "counts": seg["counts"].encode()}
            area = float(mask_utils.area(rle))
            box = mask_utils.toBbox(rle).tolist()
            if area == 0:
                continue
            if kind == "edge":  # the polygon's own extent, past the edge
                xs, ys = np.array(seg[0][0::2]), np.array(seg[0][1::2])
                box = [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
            elif kind == "tiny":  # narrower than a pixel (training drops such boxes)
                box = [box[0], box[1], 0.6, 0.7]
            cat = int(rng.integers(1, 4))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": cat,
                    "segmentation": seg,
                    "area": area,
                    "bbox": box,
                    "iscrowd": crowd,
                }
            )
            truth = mask_utils.decode(rle)
            for copy_ in range(int(rng.integers(1, 3))):  # found, with a duplicate at times
                shift = rng.integers(-3, 4, 2)
                m = np.roll(truth, tuple(shift), (0, 1))
                if copy_ and rng.random() < 0.5:
                    m = m & (rng.random(m.shape) < 0.6)
                label = cat if rng.random() < 0.85 else int(rng.integers(1, 4))
                x, y, bw, bh = np.array(box) + np.r_[shift[::-1], 0, 0] * rng.uniform(0.5, 1.5)
                rows.append([i, x, y, bw, bh, rng.random(), label])
                rles += encode_masks(m[None])
                sizes.append((h, w))
        for _ in range(int(rng.integers(0, 3))):  # false positives
            m = np.zeros((h, w), np.uint8)
            x0, y0 = int(rng.integers(0, w - 5)), int(rng.integers(0, h - 5))
            m[y0 : y0 + int(rng.integers(2, 30)), x0 : x0 + int(rng.integers(2, 30))] = 1
            bx = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(m))).tolist()
            rows.append([i, *bx, rng.random(), int(rng.integers(1, 4))])
            rles += encode_masks(m[None])
            sizes.append((h, w))
    categories = [{"id": c, "name": n} for c, n in ((1, "cat"), (2, "dog"), (3, "bird"))]
    gt = {"images": images, "annotations": anns, "categories": categories}
    return gt, COCOResults(np.array(rows, np.float64), rles, np.array(sizes))


def pycocotools_eval(gt: dict, results: COCOResults, iou_type: str, use_cats: bool = True):
    """pycocotools on the json file's content and the results as a results file holds them
    (mask results without ``bbox``)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        records = results.rows if iou_type == "bbox" else copy.deepcopy(results.records("segm"))
        ev = COCOeval(coco, coco.loadRes(records), iou_type)
        ev.params.useCats = int(use_cats)
        ev.evaluate(), ev.accumulate(), ev.summarize()
    return ev


@pytest.fixture(scope="module")
def generated():
    return generated_coco()


@pytest.mark.parametrize("backend", ["vernier", "faster_coco_eval", "pycocotools"])
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_stats_and_per_category_ap_equal_pycocotools(generated, backend, iou_type):
    """Identical to pycocotools (vernier and pycocotools bit for bit; faster-coco-eval to
    1e-12): the 12 figures and each category's AP. Fails if mask results keep their ``bbox``
    (pycocotools then sizes a detection by its box: APs/APm/APl move) or if crowd regions
    were scored as ordinary objects."""
    gt, results = generated
    kinds = {type(a["segmentation"]).__name__ for a in gt["annotations"]}
    assert kinds == {"list", "dict"} and any(a["iscrowd"] for a in gt["annotations"])
    ev = pycocotools_eval(gt, results, iou_type)
    ours = COCOEvaluation(copy.deepcopy(gt), backend).evaluate(results, iou_type)
    tol = 0 if backend != "faster_coco_eval" else 1e-12
    np.testing.assert_allclose([ours.stats[m] for m in METRICS], ev.stats, rtol=0, atol=tol)
    precision = ev.eval["precision"]
    for k, cat in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        assert ours.per_category[cat] == pytest.approx(float(p[p > -1].mean()), abs=tol)
    assert 0.03 < ours.stats["AP"] < 0.9 and ours.stats["AP50"] > 0.15  # not trivial


def test_class_agnostic_and_empty_results(generated):
    gt, results = generated
    ev = pycocotools_eval(gt, results, "segm", use_cats=False)
    ours = COCOEvaluation(gt, "vernier", use_cats=False).evaluate(results, "segm")
    np.testing.assert_array_equal([ours.stats[m] for m in METRICS], ev.stats)
    none = COCOEvaluation(gt).evaluate(COCOResults(np.zeros((0, 7)), [], np.zeros((0, 2))))
    assert none.stats["AP"] == 0.0 and none.per_category == {1: None, 2: None, 3: None}
    with pytest.raises(ValueError, match="needs results with masks"):
        COCOEvaluation(gt).evaluate(COCOResults(results.rows), "segm")
    with pytest.raises(ValueError, match="choose one of"):
        COCOEvaluation(gt, "cocoapi")
