"""Semantic-segmentation datasets: Pascal VOC, Cityscapes, ADE20K, image+mask folders, synthetic.

Every reader yields ``(image (H, W, 3) uint8 RGB, mask (H, W) uint8)`` pairs where mask values
are class indices or ``ignore_index``. A mask whose size differs from its image, or that holds
values that are neither a class nor the ignore label, is an error naming the file and the values.

Training items are fetched by ``(index, seed)`` (seeded augmentation); evaluation items by index.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .images import ImageReadError, read_label_map, read_rgb
from .inputs import IMAGE_SUFFIXES
from .synthetic import SHAPE_CLASSES, make_scene

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
CITYSCAPES_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
# Cityscapes labelIds -> trainIds (cityscapesScripts' labels.py); every other id is ignored.
CITYSCAPES_TRAIN_IDS = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}


def voc_palette(num: int = 256) -> np.ndarray:
    """The Pascal VOC colour map, ``(num, 3)`` uint8 (class k -> colour; 255 -> cream)."""
    palette = np.zeros((num, 3), np.uint8)
    for k in range(num):
        c, r, g, b = k, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[k] = (r, g, b)
    return palette


@dataclass(frozen=True)
class SegItem:
    image: Path
    mask: Path | None
    name: str


class SegmentationDataset(Dataset):
    """Image/mask pairs with a label lookup table, checks and an optional seeded transform.

    ``transform(image, mask, seed) -> (image, mask)`` is applied to training keys
    ``(index, seed)``; ``eval_transform(image, mask)`` to plain indices.
    """

    def __init__(
        self,
        items: list[SegItem],
        class_names: tuple[str, ...],
        *,
        ignore_index: int = 255,
        lookup: np.ndarray | None = None,
        transform: Callable | None = None,
        eval_transform: Callable | None = None,
    ) -> None:
        if not items:
            raise ImageReadError("the dataset is empty: no image/mask pairs were found")
        self.items = items
        self.class_names = tuple(class_names)
        self.ignore_index = ignore_index
        self.lookup = lookup
        self.transform = transform
        self.eval_transform = eval_transform
        valid = np.zeros(256, bool)
        valid[: len(class_names)] = True
        valid[ignore_index] = True
        self._valid = valid

    def __len__(self) -> int:
        return len(self.items)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw ``(image, mask)`` of item ``index`` after the label lookup, checked."""
        item = self.items[index]
        image = read_rgb(item.image)
        raw = read_label_map(item.mask)
        if raw.shape != image.shape[:2]:
            raise ImageReadError(
                f"mask {str(item.mask)!r} is {raw.shape[1]}x{raw.shape[0]} but its image "
                f"{str(item.image)!r} is {image.shape[1]}x{image.shape[0]}; masks must match "
                "their image pixel for pixel"
            )
        mask = self.lookup[raw] if self.lookup is not None else raw
        bad = np.unique(mask[~self._valid[mask]])
        if bad.size:
            raise ImageReadError(
                f"mask {str(item.mask)!r} holds values {bad.tolist()[:10]} that are neither a "
                "class "
                f"(0..{self.num_classes - 1}) nor the ignore label {self.ignore_index}; check "
                "data.num_classes / class names, data.ignore_index or data.reduce_zero_label"
            )
        return image, mask

    def __getitem__(self, key) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, None)
        image, mask = self.load(index)
        if seed is not None and self.transform is not None:
            image, mask = self.transform(image, mask, seed)
        elif seed is None and self.eval_transform is not None:
            image, mask = self.eval_transform(image, mask)
        return to_sample(image, mask, self.items[index].name)


def to_sample(image: np.ndarray, mask: np.ndarray, name: str) -> dict:
    return {
        "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
        "mask": torch.from_numpy(np.ascontiguousarray(mask)).long(),
        "name": name,
    }


class SyntheticSegmentation(Dataset):
    """Textured shapes with exact masks (``background`` + shape classes), deterministic by seed.

    Objects have a 1-pixel void border (255), as VOC masks do, so the ignore label is exercised.
    """

    def __init__(
        self,
        num_images: int,
        size: int = 128,
        *,
        seed: int = 0,
        ignore_index: int = 255,
        transform: Callable | None = None,
    ) -> None:
        self.num_images, self.size, self.seed = num_images, size, seed
        self.ignore_index = ignore_index
        self.transform = transform
        self.class_names = ("background", *SHAPE_CLASSES)

    def __len__(self) -> int:
        return self.num_images

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        scene = make_scene(self.seed * 1_000_003 + index, self.size, self.size)
        return scene.image, scene.semantic(self.ignore_index, border=1)

    def __getitem__(self, key) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, None)
        image, mask = self.load(index)
        if seed is not None and self.transform is not None:
            image, mask = self.transform(image, mask, seed)
        return to_sample(image, mask, f"synthetic_{index:06d}")


# -- readers --------------------------------------------------------------------------------
def _class_names_file(path: Path) -> tuple[str, ...]:
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if not names:
        raise ImageReadError(f"class-names file {str(path)!r} is empty")
    return names


def voc_items(root: str | os.PathLike, split: str | None) -> tuple[list[SegItem], tuple[str, ...]]:
    """``root/JPEGImages/*.jpg`` + ``root/SegmentationClass/*.png`` (palette indices, 255 void).

    The split list ``root/ImageSets/Segmentation/{split}.txt`` is used when it exists; otherwise
    every mask. Class names come from ``root/class_names.txt`` when present, else VOC's 21.
    """
    root = Path(root)
    masks_dir = root / "SegmentationClass"
    if not masks_dir.is_dir():
        raise ImageReadError(f"{str(root)!r} is not a VOC folder: {masks_dir} is missing")
    split_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if split and split_file.is_file():
        stems = [s.strip() for s in split_file.read_text().split() if s.strip()]
    else:
        stems = sorted(p.stem for p in masks_dir.glob("*.png"))
    items = [SegItem(root / "JPEGImages" / f"{s}.jpg", masks_dir / f"{s}.png", s) for s in stems]
    return items, voc_class_names(root)


def voc_class_names(root: str | os.PathLike) -> tuple[str, ...]:
    """``root/class_names.txt`` when present, else VOC's 21 classes."""
    names_file = Path(root) / "class_names.txt"
    return _class_names_file(names_file) if names_file.is_file() else VOC_CLASSES


def cityscapes_items(
    root: str | os.PathLike, split: str
) -> tuple[list[SegItem], tuple[str, ...], np.ndarray]:
    """``leftImg8bit/{split}/*/*_leftImg8bit.png`` with ``gtFine/.../*_gtFine_labelIds.png``.

    Returns a lookup table that maps the 34 label ids to the 19 train ids (others -> 255).
    """
    root = Path(root)
    images = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
    if not images:
        raise ImageReadError(f"no images under {root / 'leftImg8bit' / split}")
    items = []
    for img in images:
        stem = img.name[: -len("_leftImg8bit.png")]
        mask = root / "gtFine" / split / img.parent.name / f"{stem}_gtFine_labelIds.png"
        items.append(SegItem(img, mask, stem))
    lookup = np.full(256, 255, np.uint8)
    for label_id, train_id in CITYSCAPES_TRAIN_IDS.items():
        lookup[label_id] = train_id
    return items, CITYSCAPES_CLASSES, lookup


def ade20k_items(root: str | os.PathLike, split: str) -> tuple[list[SegItem], np.ndarray]:
    """``images/{training,validation}/*.jpg`` + ``annotations/.../*.png``, 0 = "other".

    ADE20K-style masks reserve 0 for unlabeled pixels: ``reduce_zero_label`` maps 0 to the
    ignore label and k to k - 1 (the returned lookup table does it).
    """
    root = Path(root)
    folder = {"train": "training", "val": "validation"}.get(split, split)
    images = sorted((root / "images" / folder).glob("*.jpg"))
    if not images:
        raise ImageReadError(f"no images under {root / 'images' / folder}")
    items = [SegItem(p, root / "annotations" / folder / f"{p.stem}.png", p.stem) for p in images]
    return items, reduce_zero_label_lookup()


def reduce_zero_label_lookup(ignore_index: int = 255) -> np.ndarray:
    lookup = np.arange(256, dtype=np.int32) - 1
    lookup[0] = ignore_index
    lookup[255] = ignore_index
    return lookup.astype(np.uint8)


def folder_items(images: str | os.PathLike, masks: str | os.PathLike) -> list[SegItem]:
    """Images in one folder, masks with the same stem (``.png``) in another."""
    images, masks = Path(images), Path(masks)
    if not images.is_dir():
        raise ImageReadError(f"image folder {str(images)!r} does not exist")
    if not masks.is_dir():
        raise ImageReadError(f"mask folder {str(masks)!r} does not exist")
    items = []
    for img in sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        mask = masks / f"{img.stem}.png"
        if not mask.is_file():
            raise ImageReadError(f"image {str(img)!r} has no mask {str(mask)!r}")
        items.append(SegItem(img, mask, img.stem))
    return items


def read_class_names(path: str | os.PathLike) -> tuple[str, ...]:
    return _class_names_file(Path(path))
