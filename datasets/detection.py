"""Object-detection and instance-segmentation data: COCO json (boxes, polygons, RLE), Pascal
VOC XML, instance mask folders and synthetic scenes, stored compactly.

Annotations live in a few numpy arrays (:class:`DetectionAnnotations`; instance masks in
:class:`~.masks.InstanceMasks`), not in per-image Python dicts: a DataLoader worker receives a
small pickle, and nothing grows copy-on-write pages. Labels are contiguous ``1..K`` (0 is
background); the original image, category and annotation ids are kept for evaluation and for
writing COCO results.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .annotations import BoxAnnotations, offsets_of
from .images import ImageReadError, read_first_readable, read_label_map, read_rgb
from .masks import InstanceMasks
from .segmentation import VOC_CLASSES, folder_items
from .synthetic import SHAPE_CLASSES, make_scene

log = logging.getLogger(__name__)

VOC_DET_CLASSES = VOC_CLASSES[1:]  # without "background"
BACKGROUND_NAMES = ("_background_", "__background__", "background")


class AnnotationError(ValueError):
    """An annotation file that names an unknown image or category, or is malformed."""


@dataclass
class DetectionAnnotations(BoxAnnotations):
    """:class:`~.annotations.BoxAnnotations` (boxes clipped to the image) with each box's
    label, crowd flag, area and, when read with them, its instance mask."""

    labels: np.ndarray  # (M,) int64 in 1..K
    iscrowd: np.ndarray  # (M,) bool (VOC "difficult" is stored here too: ignored in evaluation)
    areas: np.ndarray  # (M,) float32 (the source's area: segment area for COCO)
    category_ids: np.ndarray  # (K,) int64: the source's category id of label k + 1
    class_names: tuple[str, ...]
    dropped_degenerate: int = 0
    masks: InstanceMasks | None = None  # (M,) segmentations, when read with them
    source: str = ""  # the COCO json read (evaluation scores against the file itself)

    def subset(self, keep: np.ndarray) -> DetectionAnnotations:
        """Only the images where ``keep`` is true."""
        idx = np.nonzero(keep)[0]
        counts = np.diff(self.offsets)[idx]
        rows = (
            np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in idx])
            if len(idx)
            else np.zeros(0, np.int64)
        )
        return DetectionAnnotations(
            self.file_names[idx],
            self.image_ids[idx],
            self.heights[idx],
            self.widths[idx],
            offsets_of(counts),
            self.boxes[rows],
            self.labels[rows],
            self.iscrowd[rows],
            self.areas[rows],
            self.category_ids,
            self.class_names,
            self.dropped_degenerate,
            self.masks.take(rows) if self.masks is not None else None,
            self.source,
        )

    def segmentation(self, row: int) -> list | dict | None:
        """Box row ``row``'s COCO segmentation (polygons or compressed RLE), if any."""
        if self.masks is None:
            return None
        i = int(np.searchsorted(self.offsets, row, side="right")) - 1
        return self.masks.segmentation(row, int(self.heights[i]), int(self.widths[i]))


def _clip_and_filter(
    boxes: np.ndarray,
    image_of_box: np.ndarray,
    heights: np.ndarray,
    widths: np.ndarray,
    min_size: float,
) -> tuple[np.ndarray, np.ndarray]:
    boxes = boxes.copy()
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, widths[image_of_box, None])
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, heights[image_of_box, None])
    ok = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
    return boxes, ok


def _pack(
    file_names: Sequence[str],
    image_ids: np.ndarray,
    heights: np.ndarray,
    widths: np.ndarray,
    image_of_box: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    iscrowd: np.ndarray,
    areas: np.ndarray,
    category_ids: np.ndarray,
    class_names: Sequence[str],
    source: str,
    min_box_size: float = 1.0,
    masks: InstanceMasks | None = None,
    json_path: str = "",
) -> DetectionAnnotations:
    boxes, ok = _clip_and_filter(
        boxes.astype(np.float32), image_of_box, heights, widths, min_box_size
    )
    dropped = int((~ok).sum())
    if dropped:
        log.warning(
            "%s: dropped %d degenerate box%s (narrower than %g px after clipping) from training",
            source,
            dropped,
            "" if dropped == 1 else "es",
            min_box_size,
        )
    order = np.argsort(image_of_box[ok], kind="stable")
    keep = np.nonzero(ok)[0][order]
    counts = np.bincount(image_of_box[keep], minlength=len(image_ids))
    return DetectionAnnotations(
        file_names=np.array([f.encode("utf-8") for f in file_names]),
        image_ids=image_ids.astype(np.int64),
        heights=heights.astype(np.int32),
        widths=widths.astype(np.int32),
        offsets=offsets_of(counts),
        boxes=boxes[keep],
        labels=labels[keep].astype(np.int64),
        iscrowd=iscrowd[keep].astype(bool),
        areas=areas[keep].astype(np.float32),
        category_ids=category_ids.astype(np.int64),
        class_names=tuple(class_names),
        dropped_degenerate=dropped,
        masks=masks.take(keep) if masks is not None else None,
        source=json_path,
    )


def _load_json(path: Path):
    """orjson when installed (about 1.6x faster on COCO-sized files), else the standard library.

    The cyclic garbage collector is paused meanwhile: millions of new dicts would otherwise
    trigger full collections that rescan everything already in memory.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        try:
            import orjson
        except ImportError:
            return json.loads(path.read_text())
        return orjson.loads(path.read_bytes())
    finally:
        if enabled:
            gc.enable()


def read_coco(
    path: str | os.PathLike, *, contiguous_labels: bool = True, masks: bool = False
) -> DetectionAnnotations:
    """A COCO-format json (any labeling tool's export) -> compact annotations.

    Category names come from the json; a ``_background_`` category without annotations (as
    labelme exports) is skipped. ``contiguous_labels=False`` uses the category ids themselves as
    labels (torchvision's COCO models predict category ids 1..90). ``masks=True`` also keeps the
    segmentations (polygons, RLE with compressed or uncompressed counts) for instance
    segmentation; an annotation without one is trained on its box.
    """
    path = Path(path)
    try:
        data = _load_json(path)
    except FileNotFoundError:
        raise AnnotationError(f"annotation file {str(path)!r} does not exist") from None
    except ValueError as e:  # json.JSONDecodeError and orjson.JSONDecodeError are ValueErrors
        raise AnnotationError(f"annotation file {str(path)!r} is not valid json: {e}") from None
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise AnnotationError(f"{str(path)!r} has no '{key}' list: is it a COCO-format file?")
    anns = data["annotations"]
    try:  # two passes over the annotations; ids are mapped by binary search, not dict lookups
        fields = np.array(
            [
                (a["image_id"], a["category_id"], a.get("iscrowd", 0), a.get("area", -1.0))
                for a in anns
            ],
            np.float64,
        ).reshape(-1, 4)
        xywh = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
    except (KeyError, ValueError, TypeError) as e:
        raise AnnotationError(
            f"{str(path)!r}: an annotation lacks image_id/category_id or has a malformed bbox ({e})"
        ) from None
    ann_image, ann_cat = fields[:, 0].astype(np.int64), fields[:, 1].astype(np.int64)
    iscrowd, areas = fields[:, 2].astype(bool), fields[:, 3]
    used = set(np.unique(ann_cat).tolist())
    cats = [
        c
        for c in sorted(data["categories"], key=lambda c: c["id"])
        if not (c["name"] in BACKGROUND_NAMES and c["id"] not in used)
    ]
    source_cat_ids = np.array([c["id"] for c in cats], np.int64)
    if contiguous_labels:
        label_of_cat = np.arange(1, len(cats) + 1)
        names = [c["name"] for c in cats]
        cat_ids = source_cat_ids
    else:
        if source_cat_ids.size and source_cat_ids.min() < 1:
            raise AnnotationError(
                f"{str(path)!r}: category id 0 cannot be used as a label (0 is background); use "
                "contiguous labels"
            )
        label_of_cat = source_cat_ids
        by_id = {c["id"]: c["name"] for c in cats}
        names = [
            by_id.get(i, f"unused_{i}") for i in range(1, int(source_cat_ids.max(initial=0)) + 1)
        ]
        cat_ids = np.arange(1, len(names) + 1)
    images = data["images"]
    try:
        image_ids = np.array([im["id"] for im in images], np.int64)
        heights = np.array([im["height"] for im in images], np.int64)
        widths = np.array([im["width"] for im in images], np.int64)
        file_names = [im["file_name"] for im in images]
    except KeyError as e:
        raise AnnotationError(f"{str(path)!r}: an image entry lacks {e}") from None
    if len(np.unique(image_ids)) != len(image_ids):
        raise AnnotationError(f"{str(path)!r}: image ids are not unique")
    image_of_box = _lookup(image_ids, ann_image, anns, "image", path)
    labels = label_of_cat[_lookup(source_cat_ids, ann_cat, anns, "category", path)]
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
    areas = np.where(areas < 0, xywh[:, 2] * xywh[:, 3], areas).astype(np.float32)
    segmentations = None
    if masks:
        try:
            segmentations = InstanceMasks.build(
                [a.get("segmentation") for a in anns],
                heights[image_of_box],
                widths[image_of_box],
                names=[a.get("id") for a in anns],
                source=repr(str(path)),
            )
        except ValueError as e:
            raise AnnotationError(str(e)) from None
    return _pack(
        file_names,
        image_ids,
        heights,
        widths,
        image_of_box,
        boxes,
        labels,
        iscrowd,
        areas,
        cat_ids,
        names,
        str(path),
        masks=segmentations,
        json_path=str(path),
    )


def coco_ground_truth(path: str | os.PathLike, *, segmentations: bool = False) -> dict:
    """A COCO json as evaluation reads it: the file's own images, boxes, areas and crowd flags
    (nothing clipped or dropped: that is for training), annotation ids renumbered ``1..M``
    (pycocotools' matching takes id 0 for "unmatched": a box with id 0 could never be found);
    segmentations only with ``segmentations=True`` (box evaluation does not read them)."""
    path = Path(path)
    try:
        data = _load_json(path)
    except FileNotFoundError:
        raise AnnotationError(f"annotation file {str(path)!r} does not exist") from None
    except ValueError as e:
        raise AnnotationError(f"annotation file {str(path)!r} is not valid json: {e}") from None
    annotations = []
    for j, a in enumerate(data.get("annotations", [])):
        if not segmentations:
            a = {k: v for k, v in a.items() if k != "segmentation"}
        a["id"] = j + 1
        a.setdefault("iscrowd", 0)
        if "area" not in a:
            a["area"] = float(a["bbox"][2] * a["bbox"][3])
        annotations.append(a)
    return {
        "images": data.get("images", []),
        "annotations": annotations,
        "categories": data.get("categories", []),
    }


def _lookup(keys: np.ndarray, values: np.ndarray, anns: list, what: str, path: Path) -> np.ndarray:
    """Index into ``keys`` of every value; an unknown value is an error naming its annotation."""
    if len(keys) == 0:
        if len(values):
            raise AnnotationError(
                f"{str(path)!r}: annotation {anns[0].get('id')} names unknown {what} id "
                f"{int(values[0])}"
            )
        return np.zeros(0, np.int64)
    order = np.argsort(keys, kind="stable")
    pos = np.clip(np.searchsorted(keys[order], values), 0, len(keys) - 1)
    bad = np.nonzero(keys[order][pos] != values)[0]
    if len(bad):
        j = int(bad[0])
        raise AnnotationError(
            f"{str(path)!r}: annotation {anns[j].get('id')} names unknown {what} id "
            f"{int(values[j])}"
        )
    return order[pos]


def read_voc(
    root: str | os.PathLike, split: str, class_names: Sequence[str] = VOC_DET_CLASSES
) -> DetectionAnnotations:
    """Pascal VOC: ``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main/{split}.txt``.

    VOC boxes are 1-based inclusive pixel indices; they become 0-based pixel edges
    (``x1 - 1, y1 - 1, x2, y2``). "difficult" objects are ignored in evaluation.
    """
    root = Path(root)
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if split_file.is_file():
        stems = [s.strip() for s in split_file.read_text().split() if s.strip()]
    else:
        stems = sorted(p.stem for p in (root / "Annotations").glob("*.xml"))
    if not stems:
        raise AnnotationError(f"no VOC annotations under {root / 'Annotations'}")
    label_of = {n: i + 1 for i, n in enumerate(class_names)}
    files, heights, widths, img_of, boxes, labels, difficult = [], [], [], [], [], [], []
    for n, stem in enumerate(stems):
        xml = root / "Annotations" / f"{stem}.xml"
        try:
            tree = ET.parse(xml).getroot()
        except (OSError, ET.ParseError) as e:
            raise AnnotationError(f"cannot read {str(xml)!r}: {e}") from None
        size = tree.find("size")
        files.append(f"JPEGImages/{tree.findtext('filename') or stem + '.jpg'}")
        heights.append(int(size.findtext("height")))
        widths.append(int(size.findtext("width")))
        for obj in tree.iter("object"):
            name = obj.findtext("name").strip()
            if name not in label_of:
                raise AnnotationError(
                    f"{str(xml)!r}: unknown class {name!r}; known: {list(class_names)}"
                )
            bb = obj.find("bndbox")
            x1, y1, x2, y2 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            boxes.append([x1 - 1, y1 - 1, x2, y2])
            labels.append(label_of[name])
            difficult.append(obj.findtext("difficult", "0").strip() == "1")
            img_of.append(n)
    boxes_a = np.array(boxes, np.float64).reshape(-1, 4)
    areas = (boxes_a[:, 2] - boxes_a[:, 0]) * (boxes_a[:, 3] - boxes_a[:, 1])
    return _pack(
        files,
        np.arange(len(stems)),
        np.array(heights),
        np.array(widths),
        np.array(img_of, np.int64),
        boxes_a,
        np.array(labels, np.int64),
        np.array(difficult, bool),
        areas,
        np.arange(1, len(class_names) + 1),
        class_names,
        str(root),
    )


def read_instance_masks(
    images: str | os.PathLike,
    instances: str | os.PathLike,
    classes: str | os.PathLike,
    class_names: Sequence[str],
) -> DetectionAnnotations:
    """Instance segmentation from mask folders (Pascal VOC's ``SegmentationObject`` and
    ``SegmentationClass`` layout): for each image of ``images``, a PNG of the same stem in
    ``instances`` (pixel = instance number, 0 background, 255 void) and in ``classes`` (pixel
    = class index into ``class_names``, whose first entry is the background). An instance's
    class is the class of most of its pixels; its box and area come from its pixels.
    """
    items = folder_items(images, instances)
    if not items:
        raise AnnotationError(f"no images in {str(images)!r}")
    names = tuple(class_names)
    if names and names[0] in BACKGROUND_NAMES:
        names = names[1:]
    files, heights, widths, img_of, boxes, labels, areas, masks = [], [], [], [], [], [], [], []
    for n, item in enumerate(items):
        instance_map = read_label_map(item.mask)
        class_path = Path(classes) / item.mask.name
        class_map = read_label_map(class_path)
        if class_map.shape != instance_map.shape:
            raise AnnotationError(
                f"{str(class_path)!r} is {class_map.shape[1]}x{class_map.shape[0]} but "
                f"{str(item.mask)!r} is {instance_map.shape[1]}x{instance_map.shape[0]}"
            )
        files.append(str(item.image.relative_to(images)))
        heights.append(instance_map.shape[0])
        widths.append(instance_map.shape[1])
        for k in np.unique(instance_map):
            if k in (0, 255):
                continue
            mask = instance_map == k
            votes = np.bincount(class_map[mask], minlength=256)
            votes[[0, 255]] = 0
            label = int(votes.argmax())
            if votes[label] == 0 or label > len(names):
                raise AnnotationError(
                    f"instance {k} of {str(item.mask)!r} has no class in {str(class_path)!r} "
                    f"(classes 1..{len(names)} of {len(names)} names)"
                )
            ys, xs = np.nonzero(mask)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            labels.append(label)
            areas.append(float(mask.sum()))
            masks.append(mask)
            img_of.append(n)
    return _pack(
        files,
        np.arange(1, len(items) + 1),
        np.array(heights),
        np.array(widths),
        np.array(img_of, np.int64),
        np.array(boxes, np.float64).reshape(-1, 4),
        np.array(labels, np.int64),
        np.zeros(len(labels), bool),
        np.array(areas),
        np.arange(1, len(names) + 1),
        names,
        str(instances),
        masks=InstanceMasks.from_bitmasks(masks),
    )


def synthetic_annotations(
    num_images: int, seed: int, min_side: int = 128, max_side: int = 224
) -> DetectionAnnotations:
    """Boxes and exact instance masks (the visible part of each shape, as RLE; the area is its
    pixel count, as COCO's) of ``num_images`` synthetic scenes (image ``i`` drawn from
    ``seed``, ``i``)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(min_side, max_side + 1, size=(num_images, 2))
    img_of, boxes, labels, masks = [], [], [], []
    for i, (h, w) in enumerate(sizes):
        scene = make_scene(
            _scene_seed(seed, i), int(h), int(w), max_objects=5, min_size=0.12, max_size=0.45
        )
        img_of += [i] * len(scene.labels)
        boxes.append(scene.boxes)
        labels += scene.labels
        masks += scene.masks
    boxes_a = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32)
    areas = np.array([m.sum() for m in masks], np.float64)
    return _pack(
        [f"synthetic_{i:06d}.png" for i in range(num_images)],
        np.arange(1, num_images + 1),
        sizes[:, 0],
        sizes[:, 1],
        np.array(img_of, np.int64),
        boxes_a,
        np.array(labels, np.int64),
        np.zeros(len(labels), bool),
        areas,
        np.arange(1, len(SHAPE_CLASSES) + 1),
        SHAPE_CLASSES,
        "synthetic",
        masks=InstanceMasks.from_bitmasks(masks),
    )


def _scene_seed(seed: int, index: int) -> int:
    return seed * 1_000_003 + index


class DetectionDataset(Dataset):
    """Images + compact annotations; training keys ``(index, seed)`` get the seeded transform.

    Items: ``image`` (3, H, W) uint8, ``boxes`` (K, 4) float32 xyxy, ``labels`` (K,) int64,
    ``index`` and ``skipped`` (bad files replaced by the next image, when allowed); with
    ``masks=True`` training items also hold ``masks`` (K, H, W) uint8, drawn at the size the
    transform resizes to and moved with the boxes. Crowd boxes are left out of training
    targets, as the reference implementations do.
    """

    def __init__(
        self,
        ann: DetectionAnnotations,
        image_root: str | os.PathLike | None,
        *,
        transform: Callable | None = None,
        skip_bad_images: bool = False,
        synthetic_seed: int | None = None,
        masks: bool = False,
    ) -> None:
        if masks and ann.masks is None:
            raise AnnotationError(
                "instance masks were asked for but these annotations hold none (read a COCO "
                "json with masks=True, or use instance mask folders)"
            )
        self.ann = ann
        self.masks = masks
        self.root = Path(image_root) if image_root is not None else None
        self.transform = transform
        self.skip_bad_images = skip_bad_images
        self.synthetic_seed = synthetic_seed

    def __len__(self) -> int:
        return len(self.ann)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.ann.class_names

    def group_ids(self) -> list[int]:
        """0 for landscape, 1 for portrait images (aspect-ratio grouped batching)."""
        return (self.ann.heights > self.ann.widths).astype(int).tolist()

    def read_image(self, i: int) -> np.ndarray:
        if self.synthetic_seed is not None:
            h, w = int(self.ann.heights[i]), int(self.ann.widths[i])
            return make_scene(
                _scene_seed(self.synthetic_seed, i),
                h,
                w,
                max_objects=5,
                min_size=0.12,
                max_size=0.45,
            ).image
        image = read_rgb(self.root / self.ann.file_name(i))
        h, w = image.shape[:2]
        if (h, w) != (self.ann.heights[i], self.ann.widths[i]):
            raise ImageReadError(
                f"image {str(self.root / self.ann.file_name(i))!r} is {w}x{h} but its annotation "
                "says "
                f"{self.ann.widths[i]}x{self.ann.heights[i]}; fix the json or the file"
            )
        return image

    def __getitem__(self, key) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, None)
        i, image, skipped = read_first_readable(
            self.read_image, index, len(self), self.skip_bad_images
        )
        rows = self.ann.rows(i)
        boxes, labels = self.ann.boxes[rows], self.ann.labels[rows]
        masks = None
        if seed is not None:  # training: no crowd boxes; seeded augmentation
            keep = ~self.ann.iscrowd[rows]
            boxes, labels = boxes[keep], labels[keep]
            if self.masks:
                masks = self._mask_drawer(np.arange(rows.start, rows.stop)[keep], boxes, image)
            if self.transform is not None:
                image, boxes, labels, masks = self.transform(image, boxes, labels, seed, masks)
            elif masks is not None:
                masks = masks(*image.shape[:2])
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "boxes": torch.from_numpy(np.asarray(boxes, np.float32).reshape(-1, 4)),
            "labels": torch.from_numpy(np.asarray(labels, np.int64)),
            "index": i,
            "skipped": skipped,
        }
        if masks is not None:
            item["masks"] = torch.from_numpy(np.ascontiguousarray(masks, np.uint8))
        return item

    def _mask_drawer(self, rows: np.ndarray, boxes: np.ndarray, image: np.ndarray):
        """``draw(height, width) -> (K, height, width)`` uint8: the masks of ``rows`` drawn at
        a size (the transform chooses it: polygons are drawn there, not resampled)."""
        size = image.shape[:2]

        def draw(height: int, width: int) -> np.ndarray:
            return self.ann.masks.rasterize(rows, boxes, size, (height, width))

        return draw

    def write_coco(self, out_dir: str | os.PathLike) -> Path:
        """Write the images (PNG) and a COCO json (``instances.json``, with each instance's
        segmentation when the annotations hold masks) to ``out_dir``."""
        import cv2

        out = Path(out_dir)
        (out / "images").mkdir(parents=True, exist_ok=True)
        a = self.ann
        images, annotations = [], []
        for i in range(len(self)):
            name = Path(a.file_name(i)).with_suffix(".png").name
            cv2.imwrite(
                str(out / "images" / name), cv2.cvtColor(self.read_image(i), cv2.COLOR_RGB2BGR)
            )
            images.append(
                {
                    "id": int(a.image_ids[i]),
                    "file_name": name,
                    "height": int(a.heights[i]),
                    "width": int(a.widths[i]),
                }
            )
            for r in range(*a.rows(i).indices(a.num_boxes)):
                x1, y1, x2, y2 = (float(v) for v in a.boxes[r])
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": int(a.image_ids[i]),
                        "category_id": int(a.category_ids[a.labels[r] - 1]),
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": float(a.areas[r]),
                        "iscrowd": int(a.iscrowd[r]),
                    }
                )
                segmentation = a.segmentation(r)
                if segmentation is not None:
                    annotations[-1]["segmentation"] = segmentation
        categories = [{"id": int(c), "name": n} for c, n in zip(a.category_ids, a.class_names)]
        path = out / "instances.json"
        path.write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": categories})
        )
        return path
