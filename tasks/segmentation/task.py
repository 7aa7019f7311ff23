"""The segmentation task: what the engine needs (data, model, losses, evaluator)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from resvision.datasets.segmentation import (
    CITYSCAPES_CLASSES,
    SegmentationDataset,
    SyntheticSegmentation,
    ade20k_items,
    cityscapes_items,
    folder_items,
    read_class_names,
    reduce_zero_label_lookup,
    voc_class_names,
    voc_items,
)
from resvision.datasets.transforms import SegTrainTransform
from resvision.heads.segmentation import SegmentationModel
from resvision.tasks.engine import distributed as D
from resvision.tasks.engine.errors import ConfigError
from resvision.tasks.engine.runtime import resolve_device
from resvision.tasks.engine.task import EvalContext, Task

from .config import PRESETS, SegConfig
from .evaluation import SegmentationEvaluator
from .inference import predict_logits
from .model import build_model


def class_names_for(cfg: SegConfig) -> tuple[str, ...]:
    """The class names the data config implies (without reading any image)."""
    d = cfg.data
    if d.class_names:
        return read_class_names(d.class_names)
    if d.source == "synthetic":
        return SyntheticSegmentation(1).class_names
    if d.source == "voc":
        return voc_class_names(d.root)
    if d.source == "cityscapes":
        return CITYSCAPES_CLASSES
    if d.source == "ade20k":
        names = Path(d.root) / "class_names.txt"
        return (
            read_class_names(names) if names.is_file() else tuple(f"class_{i}" for i in range(150))
        )
    raise ConfigError(
        "data.source=folder needs data.class_names: a file with one class name per line "
        "(class 0 first)"
    )


def _items(cfg: SegConfig, split: str) -> tuple[list, Any]:
    """The (image, mask) items of a split and the label lookup table (or None)."""
    d = cfg.data
    lookup = reduce_zero_label_lookup(d.ignore_index) if d.reduce_zero_label else None
    name = d.train_split if split == "train" else d.val_split
    if d.source == "voc":
        return voc_items(d.root, name)[0], lookup
    if d.source == "cityscapes":
        items, _, lookup = cityscapes_items(d.root, name)
        return items, lookup
    if d.source == "ade20k":
        items, lookup = ade20k_items(d.root, name)
        return items, lookup
    images, masks = (
        (d.train_images, d.train_masks) if split == "train" else (d.val_images, d.val_masks)
    )
    if split == "train" and (not images or not masks):
        raise ConfigError("data.source=folder needs data.train_images and data.train_masks folders")
    return (folder_items(images, masks) if images else []), lookup


class SegmentationTask(Task):
    name = "segmentation"
    config_class = SegConfig
    main_metric = "mIoU"
    default_preset = "unet_r18_synthetic"

    def presets(self):
        return PRESETS

    # -- data -------------------------------------------------------------------------------
    def build_train_set(self, cfg: SegConfig) -> Dataset:
        d = cfg.data
        transform = SegTrainTransform(
            crop_size=d.crop_size,
            scale=d.scale,
            ratio_range=d.ratio_range,
            ignore_index=d.ignore_index,
            flip=d.flip,
            color=d.photometric,
        )
        if d.source == "synthetic":
            return SyntheticSegmentation(
                d.synthetic_train,
                d.synthetic_size,
                seed=d.synthetic_seed,
                ignore_index=d.ignore_index,
                transform=transform,
            )
        items, lookup = _items(cfg, "train")
        return SegmentationDataset(
            items,
            class_names_for(cfg),
            transform=transform,
            ignore_index=d.ignore_index,
            lookup=lookup,
        )

    def finalize_config(self, cfg: SegConfig, train_set: Dataset) -> SegConfig:
        names = class_names_for(cfg)
        num = cfg.model.num_classes or len(names)
        if num != len(names):
            raise ConfigError(
                f"model.num_classes={cfg.model.num_classes} but the data has {len(names)} classes "
                f"({', '.join(names[:6])}...); set model.num_classes=0 to follow the data"
            )
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=num))

    def build_val_set(self, cfg: SegConfig) -> Dataset | None:
        d = cfg.data
        if d.source == "synthetic":
            return SyntheticSegmentation(
                d.synthetic_val,
                d.synthetic_size,
                seed=d.synthetic_seed + 1,
                ignore_index=d.ignore_index,
            )
        items, lookup = _items(cfg, "val")
        if not items:
            return None
        return SegmentationDataset(
            items, class_names_for(cfg), ignore_index=d.ignore_index, lookup=lookup
        )

    def collate(self, items: list[dict]) -> dict[str, Any]:
        images = [it["image"] for it in items]
        masks = [it["mask"] for it in items]
        names = [it["name"] for it in items]
        if len({tuple(i.shape) for i in images}) == 1:
            return {"images": torch.stack(images), "targets": torch.stack(masks), "names": names}
        return {"images": images, "targets": masks, "names": names}

    # -- model and losses -------------------------------------------------------------------
    def build_model(self, cfg: SegConfig) -> SegmentationModel:
        return build_model(cfg)

    def training_losses(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        if isinstance(batch["images"], list):
            raise ConfigError(
                "training images differ in size: set data.crop_size so batches can be stacked"
            )
        return model(batch["images"], batch["targets"])

    # -- evaluation -------------------------------------------------------------------------
    def build_evaluator(self, cfg: SegConfig, dataset: Dataset) -> SegmentationEvaluator:
        device = resolve_device(cfg.runtime.device, D.current())
        return SegmentationEvaluator(
            class_names_for(cfg), ignore_index=cfg.data.ignore_index, device=device
        )

    def predict_batch(
        self, model: nn.Module, batch: dict[str, Any], ctx: EvalContext
    ) -> list[torch.Tensor]:
        """One ``(H, W)`` label map per image, each predicted at its own size."""
        out = []
        for image in batch["images"]:
            with ctx.autocast():
                scores = predict_logits(model, image[None], ctx.cfg.inference)
            out.append(scores.argmax(1)[0])
        return out

    def checkpoint_meta(self, cfg: SegConfig, train_set: Dataset) -> dict[str, Any]:
        return {"class_names": list(class_names_for(cfg))}
