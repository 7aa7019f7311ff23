"""Detection data: COCO/VOC readers, errors that name what is wrong, compact storage."""

from __future__ import annotations

import contextlib
import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resvision.datasets.detection import (
    DetectionDataset,
    read_coco,
    read_voc,
    synthetic_annotations,
)
from resvision.datasets.transforms import DetTrainTransform


def _coco(tmp_path, images=None, annotations=None, categories=None):
    data = {
        "images": images
        if images is not None
        else [
            {"id": 0, "file_name": "a.png", "height": 40, "width": 60},
            {"id": 1, "file_name": "b.png", "height": 50, "width": 30},
        ],
        "annotations": annotations
        if annotations is not None
        else [
            {
                "id": 0,
                "image_id": 0,
                "category_id": 1,
                "bbox": [5, 5, 20, 10],
                "area": 200,
                "iscrowd": 0,
            },
            {
                "id": 1,
                "image_id": 0,
                "category_id": 2,
                "bbox": [50, 30, 30, 30],
                "area": 900,
                "iscrowd": 0,
            },  # sticks out: clipped
            {
                "id": 2,
                "image_id": 0,
                "category_id": 1,
                "bbox": [10, 10, 0.5, 8],
                "area": 4,
                "iscrowd": 0,
            },  # degenerate
            {
                "id": 3,
                "image_id": 0,
                "category_id": 2,
                "bbox": [0, 0, 60, 40],
                "area": 2400,
                "iscrowd": 1,
            },
        ],
        "categories": categories
        if categories is not None
        else [
            {"id": 0, "name": "_background_"},
            {"id": 1, "name": "cat"},
            {"id": 2, "name": "dog"},
        ],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    for im in data["images"]:
        Image.fromarray(np.full((im["height"], im["width"], 3), 90, np.uint8)).save(
            tmp_path / im["file_name"]
        )
    return path


def test_coco_reader_clips_drops_degenerate_and_keeps_negatives(tmp_path, caplog):
    with caplog.at_level("WARNING"):
        ann = read_coco(_coco(tmp_path))
    assert ann.class_names == ("cat", "dog")  # the empty _background_ category is skipped
    assert ann.dropped_degenerate == 1 and "dropped 1 degenerate" in caplog.text
    assert ann.num_boxes == 3 and len(ann) == 2
    assert ann.boxes[1].tolist() == [50, 30, 60, 40]  # clipped to the 60x40 image
    ds = DetectionDataset(ann, tmp_path)
    train_item = ds[(0, 123)]
    assert train_item["labels"].tolist() == [1, 2]  # the crowd box is not a training target
    assert ds[0]["labels"].tolist() == [1, 2, 2]  # evaluation sees it
    assert len(ds[(1, 5)]["boxes"]) == 0  # an image without objects stays, as a negative
    assert len(ann.subset(np.diff(ann.offsets) > 0)) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"annotations": [{"id": 5, "image_id": 9, "category_id": 1, "bbox": [0, 0, 4, 4]}]},
            r"annotation 5 names unknown image id 9",
        ),
        (
            {"annotations": [{"id": 6, "image_id": 0, "category_id": 7, "bbox": [0, 0, 4, 4]}]},
            r"annotation 6 names unknown category id 7",
        ),
    ],
)
def test_unknown_image_or_category_is_named(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        read_coco(_coco(tmp_path, **change))


def test_missing_and_corrupt_images_are_named_or_skipped(tmp_path):
    ann = read_coco(_coco(tmp_path))
    (tmp_path / "a.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"a\.png.*cannot be decoded"):
        DetectionDataset(ann, tmp_path)[0]
    item = DetectionDataset(ann, tmp_path, skip_bad_images=True)[0]
    assert item["index"] == 1 and "a.png" in item["skipped"][0]
    (tmp_path / "b.png").unlink()
    with pytest.raises(ValueError, match=r"b\.png.*does not exist"):
        DetectionDataset(ann, tmp_path)[1]


def test_voc_xml_reader(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "Annotations" / "x.xml").write_text(
        "<annotation><filename>x.jpg</filename><size><width>100</width><height>80</height><depth>3</depth></size>"
        "<object><name>dog</name><difficult>0</difficult><bndbox><xmin>11</xmin><ymin>21</ymin><xmax>50</xmax><ymax>60</ymax></bndbox></object>"
        "<object><name>cat</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>20</xmax><ymax>20</ymax></bndbox></object>"
        "</annotation>"
    )
    ann = read_voc(tmp_path, "trainval")
    assert ann.boxes[0].tolist() == [10, 20, 50, 60]  # 1-based inclusive -> pixel edges
    assert ann.class_names[ann.labels[0] - 1] == "dog" and ann.iscrowd.tolist() == [False, True]
    (tmp_path / "Annotations" / "x.xml").write_text(
        "<annotation><size><width>1</width><height>1</height></size><object><name>unicorn</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>1</xmax><ymax>1</ymax></bndbox></object></annotation>"
    )
    with pytest.raises(ValueError, match="unknown class 'unicorn'"):
        read_voc(tmp_path, "trainval")


def test_compact_storage_is_much_smaller_than_torchvision_cocodetection(tmp_path):
    import contextlib
    import io

    from torchvision.datasets import CocoDetection

    from resvision.tools.benchmark_cmd import load

    synthetic_coco = load("detection").synthetic_coco

    path = tmp_path / "big.json"
    path.write_text(json.dumps(synthetic_coco(2000, 7.3)))
    with contextlib.redirect_stdout(io.StringIO()):
        theirs = len(pickle.dumps(CocoDetection(str(tmp_path), str(path))))
    ours = len(pickle.dumps(DetectionDataset(read_coco(path), tmp_path)))
    assert ours * 4 <= theirs, (ours, theirs)
    # with the polygons (float32 coordinates, 4 bytes where pickle writes 9 a float): 0.46x
    with_masks = len(pickle.dumps(DetectionDataset(read_coco(path, masks=True), tmp_path)))
    assert with_masks * 2 <= theirs, (with_masks, theirs)


def test_train_transform_moves_boxes_with_the_image():
    ann = synthetic_annotations(4, 0)
    ds = DetectionDataset(
        ann,
        None,
        transform=DetTrainTransform(short_sizes=(200,), max_size=400, flip=True),
        synthetic_seed=0,
    )
    for seed in range(4):
        item = ds[(2, seed)]
        h, w = item["image"].shape[1:]
        assert min(h, w) == 200
        scale = 200 / min(ann.heights[2], ann.widths[2])
        raw = ann.boxes[ann.rows(2)] * scale
        flipped = raw.copy()
        flipped[:, [0, 2]] = w - raw[:, [2, 0]]
        got = item["boxes"].numpy()
        assert np.allclose(got, raw, atol=1.5) or np.allclose(got, flipped, atol=1.5)


def test_synthetic_scenes_export_to_coco_and_read_back(tmp_path):
    ann = synthetic_annotations(5, 3)
    ds = DetectionDataset(ann, None, synthetic_seed=3)
    path = ds.write_coco(tmp_path / "coco")
    back = read_coco(path, masks=True)
    assert back.class_names == ann.class_names and back.num_boxes == ann.num_boxes
    rows = np.arange(back.num_boxes)
    size = (int(ann.heights[0]), int(ann.widths[0]))
    first = rows[ann.rows(0)]
    np.testing.assert_array_equal(  # the exact masks, as RLE in the json
        back.masks.rasterize(first, back.boxes[first], size),
        ann.masks.rasterize(first, ann.boxes[first], size),
    )
    np.testing.assert_allclose(back.boxes, ann.boxes, atol=1e-4)
    assert (back.labels == ann.labels).all()
    again = DetectionDataset(back, tmp_path / "coco" / "images")
    assert (again[2]["image"] == ds[2]["image"]).all()  # PNG: lossless


def _coco_with_masks(tmp_path):
    """Two images: polygons (two parts, one past the edge), compressed RLE, a crowd region
    with uncompressed counts, and an annotation without segmentation."""
    from pycocotools import mask as mask_utils

    h, w = 40, 60
    blob = np.zeros((h, w), np.uint8)
    blob[5:20, 30:50] = 1
    blob[8:12, 35:40] = 0
    rle = mask_utils.encode(np.asfortranarray(blob))
    crowd = np.zeros((h, w), np.uint8)
    crowd[25:40, 0:25] = 1
    flat = crowd.reshape(-1, order="F")
    change = np.flatnonzero(np.diff(np.r_[0, flat, 1 - flat[-1]]) != 0)
    anns = [
        {
            "id": 1,
            "image_id": 0,
            "category_id": 1,
            "bbox": [2, 2, 66, 14],
            "segmentation": [[2, 2, 12, 2, 12, 10, 2, 10], [50, 4, 70, 4, 70, 16, 50, 16]],
            "area": 280,
            "iscrowd": 0,
        },
        {
            "id": 2,
            "image_id": 0,
            "category_id": 2,
            "bbox": [30, 5, 20, 15],
            "segmentation": {"size": [h, w], "counts": rle["counts"].decode()},
            "area": int(blob.sum()),
            "iscrowd": 0,
        },
        {
            "id": 3,
            "image_id": 0,
            "category_id": 2,
            "bbox": [0, 25, 25, 15],
            "segmentation": {"size": [h, w], "counts": np.diff(np.r_[0, change]).tolist()},
            "area": int(crowd.sum()),
            "iscrowd": 1,
        },
        {"id": 4, "image_id": 1, "category_id": 1, "bbox": [3, 4, 10, 6], "area": 60},
    ]
    return _coco(tmp_path, annotations=anns), blob, crowd


def test_coco_masks_polygons_rle_and_crowd_are_read_and_drawn_as_pycocotools_does(tmp_path):
    from pycocotools.coco import COCO

    path, blob, crowd = _coco_with_masks(tmp_path)
    ann = read_coco(path, masks=True)
    assert ann.masks.kinds.tolist() == [1, 2, 2, 0] and ann.source == str(path)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    drawn = ann.masks.rasterize(np.arange(3), ann.boxes[:3], (40, 60))
    for k, annotation_id in enumerate((1, 2, 3)):  # the polygon past the edge included
        np.testing.assert_array_equal(drawn[k], coco.annToMask(coco.anns[annotation_id]))
    np.testing.assert_array_equal(drawn[1], blob)
    np.testing.assert_array_equal(drawn[2], crowd)
    box_only = ann.masks.rasterize([3], ann.boxes[3:4], (50, 30))[0]
    assert box_only[4:10, 3:13].all() and box_only.sum() == 60  # no segmentation: its box
    # as COCO segmentations again (what a ground truth built from the annotations holds)
    assert ann.segmentation(0) == [[2, 2, 12, 2, 12, 10, 2, 10], [50, 4, 70, 4, 70, 16, 50, 16]]
    assert ann.segmentation(2)["counts"] == coco.annToRLE(coco.anns[3])["counts"].decode()
    sub = ann.subset(np.array([False, True]))
    assert sub.masks.kinds.tolist() == [0] and read_coco(path).masks is None
    ds = DetectionDataset(ann, tmp_path, masks=True)
    item = ds[(0, 7)]  # training: the crowd region is left out with its mask
    assert item["masks"].shape == (2, 40, 60) and item["labels"].tolist() == [1, 2]


@pytest.mark.parametrize(
    ("segmentation", "message"),
    [
        ({"size": [10, 10], "counts": "abc"}, r"annotation 1: RLE size \[10, 10\] is not"),
        ([[1, 2, 3, 4, 5]], r"annotation 1: a polygon has an odd number of coordinates"),
        ({"size": [40, 60], "counts": [5, 3]}, r"annotation 1: uncompressed RLE counts sum to 8"),
        ("polygon", r"annotation 1: unknown segmentation str"),
    ],
)
def test_malformed_segmentations_are_named(tmp_path, segmentation, message):
    anns = [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [0, 0, 4, 4]}]
    anns[0]["segmentation"] = segmentation
    with pytest.raises(ValueError, match=message):
        read_coco(_coco(tmp_path, annotations=anns), masks=True)


@pytest.mark.parametrize("jitter", [None, (0.4, 1.2)], ids=["resize-flip", "lsj-crop"])
def test_masks_move_with_the_boxes_and_synthetic_masks_are_exact(jitter):
    """Every augmentation moves the masks with the image and the boxes: each transformed mask
    spans its transformed box (resize, flip, large-scale-jitter crop and padding); the
    synthetic scenes' masks are the drawn shapes' visible parts exactly."""
    from resvision.datasets.synthetic import make_scene

    ann = synthetic_annotations(4, 0)
    scene = make_scene(
        0 * 1_000_003 + 1,
        int(ann.heights[1]),
        int(ann.widths[1]),
        max_objects=5,
        min_size=0.12,
        max_size=0.45,
    )
    rows = ann.rows(1)
    exact = ann.masks.rasterize(
        np.arange(rows.start, rows.stop), ann.boxes[rows], scene.image.shape[:2]
    )
    np.testing.assert_array_equal(exact, np.stack(scene.masks).astype(np.uint8))
    transform = DetTrainTransform(
        short_sizes=(150,), max_size=300, flip=True, large_scale_jitter=jitter, lsj_size=128
    )
    ds = DetectionDataset(ann, None, transform=transform, synthetic_seed=0, masks=True)
    flips = set()
    for seed in range(6):
        item = ds[(1, seed)]
        masks, boxes = item["masks"].numpy(), item["boxes"].numpy()
        assert masks.shape == (len(boxes), *item["image"].shape[1:])
        for m, b in zip(masks, boxes):
            ys, xs = np.nonzero(m)
            assert (
                np.abs(np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) - b).max()
                <= 2  # nearest resize of RLE (1.3x)
            )
        if jitter is None:  # the resized masks themselves, or their mirror image
            resized = ann.masks.rasterize(
                np.arange(rows.start, rows.stop), ann.boxes[rows], exact.shape[1:], masks.shape[1:]
            )
            flipped = bool(np.array_equal(masks, resized[:, :, ::-1]))
            assert flipped or np.array_equal(masks, resized)
            flips.add(flipped)
    assert flips == {False, True} or jitter is not None


def test_instance_mask_folders_read_as_the_labeling_tools_coco_export(voc_sample):
    """VOC's SegmentationObject / SegmentationClass PNGs of the three photos give the 12
    instances of the labelme COCO export of the same annotations: same classes, masks that
    overlap their polygon's (IoU > 0.8: void borders and rasterization differ), boxes from
    the pixels."""
    from pycocotools import mask as mask_utils

    from resvision.datasets.detection import read_instance_masks
    from resvision.datasets.segmentation import read_class_names

    names = read_class_names(voc_sample / "class_names.txt")
    ann = read_instance_masks(
        voc_sample / "JPEGImages",
        voc_sample / "SegmentationObject",
        voc_sample / "SegmentationClass",
        names,
    )
    coco = read_coco(voc_sample / "instances_coco.json", masks=True)
    assert ann.class_names == coco.class_names and ann.num_boxes == coco.num_boxes == 12
    for i in range(len(ann)):
        j = [Path(coco.file_name(k)).name for k in range(len(coco))].index(ann.file_name(i))
        ours, theirs = ann.rows(i), coco.rows(j)
        assert sorted(ann.labels[ours]) == sorted(coco.labels[theirs])
        size = (int(ann.heights[i]), int(ann.widths[i]))
        a = ann.masks.rasterize(np.arange(ours.start, ours.stop), ann.boxes[ours], size)
        b = coco.masks.rasterize(np.arange(theirs.start, theirs.stop), coco.boxes[theirs], size)
        encode = lambda m: mask_utils.encode(np.asfortranarray(m.transpose(1, 2, 0)))  # noqa: E731
        iou = mask_utils.iou(encode(a), encode(b), [0] * len(b))
        assert (iou.max(1) > 0.8).all(), iou.max(1)
    item = DetectionDataset(ann, voc_sample / "JPEGImages", masks=True)[(1, 3)]
    assert item["masks"].shape[0] == len(item["boxes"]) > 0
