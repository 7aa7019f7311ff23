"""The detection task (Faster R-CNN, Mask R-CNN): data, model, losses and COCO evaluation for
the engine."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from resvision.datasets.detection import (
    DetectionAnnotations,
    DetectionDataset,
    read_coco,
    read_instance_masks,
    read_voc,
    synthetic_annotations,
)
from resvision.datasets.segmentation import read_class_names
from resvision.datasets.transforms import DetTrainTransform
from resvision.heads.detection import FasterRCNN
from resvision.tasks.engine.errors import ConfigError
from resvision.tasks.engine.task import EvalContext, Task

from .config import PRESETS, DetConfig
from .evaluation import DetectionEvaluator
from .inference import detect_images
from .model import build_model

VAL_SEED_OFFSET = 7919  # the synthetic validation scenes' seed: data.synthetic_seed + this


def load_annotations(
    cfg: DetConfig, split: str
) -> tuple[DetectionAnnotations | None, Path | None, int | None]:
    """``(annotations, image root, synthetic seed)`` of the train or val split; ``(None, None,
    None)`` for a val split the config does not name."""
    d = cfg.data
    if d.source == "synthetic":
        seed = d.synthetic_seed if split == "train" else d.synthetic_seed + VAL_SEED_OFFSET
        n = d.synthetic_train if split == "train" else d.synthetic_val
        ann = synthetic_annotations(n, seed, d.synthetic_min_side, d.synthetic_max_side)
        return ann, None, seed
    if d.source == "masks":
        images, masks, classes = (
            (d.train_images, d.train_masks, d.train_class_masks)
            if split == "train"
            else (d.val_images, d.val_masks, d.val_class_masks)
        )
        if not masks:
            if split == "train":
                raise ConfigError(
                    "data.source=masks needs data.train_images, data.train_masks (instance "
                    "PNGs), data.train_class_masks (class PNGs) and data.class_names (a file)"
                )
            return None, None, None
        if not (images and classes and d.class_names):
            raise ConfigError(
                f"data.source=masks: data.{split}_masks needs data.{split}_images, "
                f"data.{split}_class_masks and data.class_names"
            )
        names = read_class_names(d.class_names)
        return read_instance_masks(images, masks, classes, names), Path(images), None
    if d.source == "voc":
        if not d.voc_root:
            raise ConfigError("data.source=voc needs data.voc_root (the VOCdevkit/VOC20xx folder)")
        split_name = d.voc_train_split if split == "train" else d.voc_val_split
        return read_voc(d.voc_root, split_name), Path(d.voc_root), None
    json_path, images = (
        (d.train_json, d.train_images) if split == "train" else (d.val_json, d.val_images)
    )
    if not json_path:
        if split == "train":
            raise ConfigError(
                "data.source=coco needs data.train_json and data.train_images "
                "(--data.train_json PATH ...)"
            )
        return None, None, None
    if not images:
        images = str(Path(json_path).parent)
    ann = read_coco(json_path, contiguous_labels=d.contiguous_labels, masks=cfg.model.mask.enabled)
    return ann, Path(images), None


class DetectionTask(Task):
    name = "detection"
    config_class = DetConfig
    main_metric = "AP"
    default_preset = "faster_rcnn_r18_fpn_synthetic"

    def presets(self):
        return PRESETS

    # -- data -------------------------------------------------------------------------------
    def build_train_set(self, cfg: DetConfig) -> DetectionDataset:
        d = cfg.data
        ann, root, seed = load_annotations(cfg, "train")
        if d.drop_empty:
            ann = ann.subset(np.diff(ann.offsets) > 0)
        transform = DetTrainTransform(
            short_sizes=d.train_sizes,
            max_size=d.max_size,
            flip=d.flip,
            color=d.photometric,
            large_scale_jitter=d.large_scale_jitter,
            lsj_size=d.lsj_size,
        )
        return DetectionDataset(
            ann,
            root,
            transform=transform,
            skip_bad_images=d.skip_bad_images,
            synthetic_seed=seed,
            masks=cfg.model.mask.enabled,
        )

    def finalize_config(self, cfg: DetConfig, train_set: DetectionDataset) -> DetConfig:
        names = train_set.class_names
        num = cfg.model.num_classes or len(names)
        if num < len(names):
            raise ConfigError(
                f"model.num_classes={num} but the data has {len(names)} classes; set "
                "model.num_classes=0 to follow the data"
            )
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=num))

    def build_val_set(self, cfg: DetConfig) -> DetectionDataset | None:
        ann, root, seed = load_annotations(cfg, "val")
        if ann is None:
            return None
        return DetectionDataset(
            ann, root, skip_bad_images=cfg.data.skip_bad_images, synthetic_seed=seed
        )

    def group_ids(self, dataset: DetectionDataset) -> list[int]:
        return dataset.group_ids()

    def collate(self, items: list[dict]) -> dict[str, Any]:
        keys = ("boxes", "labels", "masks")
        return {
            "images": [it["image"] for it in items],
            "targets": [{k: it[k] for k in keys if k in it} for it in items],
            "indices": [it["index"] for it in items],
            "skipped": [s for it in items for s in it["skipped"]],
        }

    # -- model and losses -------------------------------------------------------------------
    def build_model(self, cfg: DetConfig) -> FasterRCNN:
        return build_model(cfg)

    def training_losses(self, model: nn.Module, batch: dict[str, Any]):
        if batch["skipped"]:
            self.note_skipped(batch["skipped"])
        return model(batch["images"], batch["targets"])

    # -- evaluation -------------------------------------------------------------------------
    def build_evaluator(self, cfg: DetConfig, dataset: DetectionDataset) -> DetectionEvaluator:
        # a COCO json is scored against its own content, as pycocotools scores it (the
        # annotations read from it remember it)
        ev = cfg.evaluation
        return DetectionEvaluator(
            dataset.ann,
            ev.backend,
            masks=cfg.model.mask.enabled,
            mask_threshold=ev.mask_threshold,
        )

    def predict_batch(self, model: nn.Module, batch: dict[str, Any], ctx: EvalContext):
        if batch["skipped"]:
            self.note_skipped(batch["skipped"])
        ev = ctx.cfg.evaluation
        with ctx.autocast():
            return detect_images(model, batch["images"], tta=ev.tta, tta_sizes=ev.tta_sizes)

    def checkpoint_meta(self, cfg: DetConfig, train_set: DetectionDataset) -> dict[str, Any]:
        return {
            "class_names": list(train_set.class_names),
            "category_ids": train_set.ann.category_ids.tolist(),
        }
