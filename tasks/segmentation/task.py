"""The segmentation task: what the engine needs (model, data, losses, metrics)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from resvision.backbones.weights import extract_state_dict, read_checkpoint
from resvision.datasets.segmentation import (
    SegmentationDataset,
    SyntheticSegmentation,
    ade20k_items,
    cityscapes_items,
    folder_items,
    read_class_names,
    reduce_zero_label_lookup,
    voc_items,
)
from resvision.datasets.transforms import SegTrainTransform
from resvision.heads.segmentation import SegmentationModel, build_segmentation_model
from resvision.tasks.engine.errors import ConfigError
from resvision.tasks.engine.loop import load_model_weights, resolve_device
from resvision.tasks.engine.task import EvalContext, Task

from .config import PRESETS, SegConfig
from .inference import predict_logits
from .losses import SegmentationLoss
from .metrics import ConfusionMatrix, per_class_table, save_confusion_png

log = logging.getLogger(__name__)


def class_names_for(cfg: SegConfig) -> tuple[str, ...]:
    """The class names the data config implies (without reading any image)."""
    d = cfg.data
    if d.class_names:
        return read_class_names(d.class_names)
    if d.source == "synthetic":
        return SyntheticSegmentation(1).class_names
    if d.source == "voc":
        return voc_items(d.root, d.train_split)[1]
    if d.source == "cityscapes":
        from resvision.datasets.segmentation import CITYSCAPES_CLASSES

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


# -- whole-model weights (ours, smp's, torchvision's) -----------------------------------------
def _segmentation_layout(sd: Mapping[str, torch.Tensor]) -> str | None:
    keys = list(sd)
    if any(k.startswith("segmentation_head.") for k in keys):
        return "smp" if any(k.startswith("encoder.") for k in keys) else "resvision"
    if any(k.startswith("classifier.") for k in keys) and any(
        k.startswith("backbone.") for k in keys
    ):
        return "torchvision"
    return None


_TORCHVISION_RENAMES = (
    ("classifier.0.", "decoder.aspp."),
    ("classifier.1.", "decoder.conv."),
    ("classifier.2.", "decoder.bn."),
    ("classifier.4.", "segmentation_head.0."),
    ("aux_classifier.", "aux_head."),
)


def convert_segmentation_state_dict(
    sd: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor] | None:
    """A whole-model state_dict in resvision's layout, or None if ``sd`` is backbone-only."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    layout = _segmentation_layout(sd)
    if layout is None:
        return None
    out = {}
    for key, value in sd.items():
        if layout == "smp" and key.startswith("encoder."):
            key = "backbone." + key[len("encoder.") :]
        elif layout == "torchvision":
            for old, new in _TORCHVISION_RENAMES:
                if key.startswith(old):
                    key = new + key[len(old) :]
                    break
        out[key] = value
    return out


def load_whole_model(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in expected and not k.endswith("num_batches_tracked")]
    mismatched = [
        f"{k}: {tuple(sd[k].shape)} vs {tuple(expected[k].shape)}"
        for k in sd
        if k in expected and sd[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        raise ConfigError(
            f"{source} does not fit this segmentation model: missing {missing[:8]}, unexpected "
            f"{unexpected[:8]}, shape mismatches {mismatched[:4]}. Check model.arch, "
            "model.backbone, model.num_classes and the head options of the preset it came from"
        )
    model.load_state_dict(sd, strict=False)


class SegmentationTask(Task):
    name = "segmentation"
    config_class = SegConfig
    main_metric = "mIoU"
    default_preset = "unet_r18_synthetic"

    def __init__(self) -> None:
        self.last_confusion: np.ndarray | None = None
        self.class_names: tuple[str, ...] = ()

    def presets(self):
        return PRESETS

    def finalize_config(self, cfg: SegConfig) -> SegConfig:
        names = class_names_for(cfg)
        num = cfg.model.num_classes or len(names)
        if num != len(names):
            raise ConfigError(
                f"model.num_classes={cfg.model.num_classes} but the data has {len(names)} classes "
                f"({', '.join(names[:6])}...); set model.num_classes=0 to follow the data"
            )
        self.class_names = names
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=num))

    # -- model ------------------------------------------------------------------------------
    def build_model(self, cfg: SegConfig) -> SegmentationModel:
        criterion = SegmentationLoss(cfg.loss, cfg.model.num_classes, cfg.data.ignore_index)
        weights, whole = cfg.model.weights, None
        if weights and Path(weights).is_file():
            sd = extract_state_dict(read_checkpoint(weights), source=weights)
            whole = convert_segmentation_state_dict(sd)
            weights = None if whole is not None else sd
        model = build_segmentation_model(cfg.model, cfg.model, criterion, backbone_weights=weights)
        if whole is not None:
            load_whole_model(model, whole, cfg.model.weights)
            log.info("loaded a whole segmentation model from %s", cfg.model.weights)
        return model

    # -- data -------------------------------------------------------------------------------
    def build_datasets(self, cfg: SegConfig):
        d = cfg.data
        names = class_names_for(cfg)
        self.class_names = names
        transform = SegTrainTransform(
            crop_size=d.crop_size,
            scale=d.scale,
            ratio_range=d.ratio_range,
            ignore_index=d.ignore_index,
            flip=d.flip,
            color=d.photometric,
        )
        if d.source == "synthetic":
            train = SyntheticSegmentation(
                d.synthetic_train,
                d.synthetic_size,
                seed=d.synthetic_seed,
                ignore_index=d.ignore_index,
                transform=transform,
            )
            val = SyntheticSegmentation(
                d.synthetic_val,
                d.synthetic_size,
                seed=d.synthetic_seed + 1,
                ignore_index=d.ignore_index,
            )
            return train, val
        lookup = reduce_zero_label_lookup(d.ignore_index) if d.reduce_zero_label else None
        if d.source == "voc":
            train_items, val_items = (
                voc_items(d.root, d.train_split)[0],
                voc_items(d.root, d.val_split)[0],
            )
        elif d.source == "cityscapes":
            train_items, _, lookup = cityscapes_items(d.root, d.train_split)
            val_items = cityscapes_items(d.root, d.val_split)[0]
        elif d.source == "ade20k":
            train_items, lookup = ade20k_items(d.root, d.train_split)
            val_items = ade20k_items(d.root, d.val_split)[0]
        else:
            if not d.train_images or not d.train_masks:
                raise ConfigError(
                    "data.source=folder needs data.train_images and data.train_masks folders"
                )
            train_items = folder_items(d.train_images, d.train_masks)
            val_items = folder_items(d.val_images, d.val_masks) if d.val_images else []
        common = {"ignore_index": d.ignore_index, "lookup": lookup}
        train = SegmentationDataset(train_items, names, transform=transform, **common)
        val = SegmentationDataset(val_items, names, **common) if val_items else None
        return train, val

    def collate(self, items: list[dict]) -> dict[str, Any]:
        images = [it["image"] for it in items]
        masks = [it["mask"] for it in items]
        if len({tuple(i.shape) for i in images}) == 1:
            return {
                "images": torch.stack(images),
                "targets": torch.stack(masks),
                "names": [it["name"] for it in items],
            }
        return {"images": images, "targets": masks, "names": [it["name"] for it in items]}

    def training_losses(self, model, batch):
        if isinstance(batch["images"], list):
            raise ConfigError(
                "training images differ in size: set data.crop_size so batches can be stacked"
            )
        return model(batch["images"], batch["targets"])

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, loader: Iterable, ctx: EvalContext) -> dict[str, float]:
        cfg = ctx.cfg
        if cfg is None:
            raise ValueError("segmentation evaluation needs the run config (EvalContext.cfg)")
        cm = ConfusionMatrix(model.num_classes, cfg.data.ignore_index, ctx.device)
        for batch in loader:
            images = batch["images"]
            targets = batch["targets"]
            for i in range(len(images)):
                with ctx.autocast():
                    scores = predict_logits(model, images[i][None], cfg.inference)
                cm.update(scores.argmax(1)[0], targets[i])
        cm.all_reduce()
        self.last_confusion = cm.matrix.cpu().numpy()
        metrics = cm.compute()
        out = {k: metrics[k] for k in ("mIoU", "aAcc", "mAcc", "mDice")}
        names = self.class_names or tuple(str(i) for i in range(model.num_classes))
        for name, iou in zip(names, metrics["IoU"]):
            if not np.isnan(iou):
                out[f"IoU/{name}"] = float(iou)
        return out

    def checkpoint_meta(self, cfg: SegConfig, train_set) -> dict[str, Any]:
        return {"class_names": list(self.class_names)}

    def after_training(self, model: nn.Module, cfg: SegConfig, ctx: EvalContext) -> None:
        if self.last_confusion is None or ctx.run_dir is None:
            return
        from .metrics import metrics_from_confusion

        out = Path(ctx.run_dir) / "eval"
        out.mkdir(parents=True, exist_ok=True)
        table = per_class_table(metrics_from_confusion(self.last_confusion), self.class_names)
        (out / "per_class.md").write_text(table + "\n")
        save_confusion_png(self.last_confusion, self.class_names, out / "confusion.png")
        print(table)

    def command(self, verb: str, argv: list[str]) -> int:
        from . import cli

        commands = {
            "predict": cli.predict_main,
            "export": cli.export_main,
            "benchmark": cli.benchmark_main,
        }
        if verb not in commands:
            return super().command(verb, argv)
        return commands[verb](argv)

    # -- inference --------------------------------------------------------------------------
    def load_for_inference(
        self, path: str | Path, *, device: str = "auto", overrides: Sequence[str] = ()
    ) -> tuple[SegmentationModel, SegConfig, dict]:
        """Model (eval mode, best weights), config and meta of a checkpoint or run folder."""
        state, cfg = self.checkpoint_for_inference(path, overrides)
        model = self.build_model(cfg)
        load_model_weights(model, state)
        model.to(resolve_device(device)).eval()
        meta = state.get("meta") or {}
        meta.setdefault("class_names", [str(i) for i in range(cfg.model.num_classes)])
        return model, cfg, meta
