"""Segmentation data: readers, checks that name the file, augmentation keeps the ignore label."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from resvision.datasets.segmentation import (
    SegmentationDataset,
    SyntheticSegmentation,
    folder_items,
    reduce_zero_label_lookup,
    voc_items,
)
from resvision.datasets.transforms import SegTrainTransform


def _pair(tmp_path, mask_shape=(20, 30), values=(0, 1)):
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "masks").mkdir(exist_ok=True)
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "images" / "x.png")
    mask = np.random.default_rng(0).choice(values, size=mask_shape).astype(np.uint8)
    Image.fromarray(mask, mode="L").save(tmp_path / "masks" / "x.png")
    return folder_items(tmp_path / "images", tmp_path / "masks")


def test_mask_of_the_wrong_size_names_the_file(tmp_path):
    ds = SegmentationDataset(_pair(tmp_path, mask_shape=(21, 30)), ("bg", "fg"))
    with pytest.raises(ValueError, match=r"masks/x\.png.*30x21.*30x20"):
        ds[0]


def test_mask_values_outside_the_classes_name_the_file_and_values(tmp_path):
    ds = SegmentationDataset(_pair(tmp_path, values=(0, 1, 7, 255)), ("bg", "fg"))
    with pytest.raises(ValueError, match=r"masks/x\.png.*\[7\].*ignore label 255"):
        ds[0]


def test_missing_mask_and_missing_image_are_named(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "images" / "y.png")
    with pytest.raises(ValueError, match=r"has no mask .*y\.png"):
        folder_items(tmp_path / "images", tmp_path / "masks")


def test_reduce_zero_label():
    lut = reduce_zero_label_lookup()
    assert lut[0] == 255 and lut[1] == 0 and lut[150] == 149 and lut[255] == 255


def test_voc_sample_reads_palette_indices_with_void_border(voc_sample):
    items, names = voc_items(voc_sample, "train")
    assert len(items) == 3 and names[0] == "_background_" and len(names) == 21
    ds = SegmentationDataset(items, names)
    image, mask = ds.load(0)
    assert image.shape[:2] == mask.shape and image.dtype == np.uint8
    values = set(np.unique(mask).tolist())
    assert 255 in values and 0 in values and values <= set(range(21)) | {255}


def test_train_transform_keeps_the_ignore_label_and_is_seeded():
    ds = SyntheticSegmentation(4, 96, seed=3)
    image, mask = ds.load(1)
    t = SegTrainTransform(crop_size=(128, 112), ratio_range=(0.5, 1.5), scale=None)
    for seed in range(6):
        out_img, out_mask = t(image, mask, seed)
        assert out_img.shape == (128, 112, 3) and out_mask.shape == (128, 112)
        assert set(np.unique(out_mask).tolist()) <= set(np.unique(mask).tolist()) | {255}
    a, b, c = t(image, mask, 1), t(image, mask, 1), t(image, mask, 2)
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    assert not (a[0] == c[0]).all()


def test_synthetic_data_is_deterministic_and_has_every_class():
    a, b = SyntheticSegmentation(40, 64, seed=0), SyntheticSegmentation(40, 64, seed=0)
    assert (a[5]["image"] == b[5]["image"]).all() and (a[5]["mask"] == b[5]["mask"]).all()
    seen = set()
    for i in range(40):
        seen |= set(np.unique(a.load(i)[1]).tolist())
    assert seen == {0, 1, 2, 3, 4, 255}
