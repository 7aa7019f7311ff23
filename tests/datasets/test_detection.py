"""Detection data: COCO/VOC readers, errors that name what is wrong, compact storage."""

from __future__ import annotations

import json
import pickle

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
    back = read_coco(path)
    assert back.class_names == ann.class_names and back.num_boxes == ann.num_boxes
    np.testing.assert_allclose(back.boxes, ann.boxes, atol=1e-4)
    assert (back.labels == ann.labels).all()
    again = DetectionDataset(back, tmp_path / "coco" / "images")
    assert (again[2]["image"] == ds[2]["image"]).all()  # PNG: lossless
