"""The detection task: model, data, losses and COCO evaluation for the engine."""

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
from resvision.datasets.detection import (
    DetectionAnnotations,
    DetectionDataset,
    read_coco,
    read_voc,
    synthetic_annotations,
)
from resvision.datasets.transforms import DetTrainTransform
from resvision.heads.detection import FasterRCNN
from resvision.tasks.engine import distributed as D
from resvision.tasks.engine.errors import ConfigError
from resvision.tasks.engine.loop import load_model_weights, resolve_device
from resvision.tasks.engine.task import EvalContext, Task

from .config import PRESETS, DetConfig
from .evaluation import COCOEvaluator, ap_table, detections_to_rows, write_results
from .inference import detect_images

log = logging.getLogger(__name__)


_CACHE: dict[tuple, tuple] = {}


def load_annotations(
    cfg: DetConfig, split: str
) -> tuple[DetectionAnnotations, Path | None, int | None]:
    """``(annotations, image root, synthetic seed)`` of the train or val split (cached: the
    config check and the dataset build read a big json once)."""
    d = cfg.data
    key = (split, d.source, d.train_json, d.val_json, d.voc_root, d.voc_train_split, d.voc_val_split, d.contiguous_labels,
           d.synthetic_train, d.synthetic_val, d.synthetic_seed, d.synthetic_min_side, d.synthetic_max_side)  # fmt: skip
    if key not in _CACHE:
        if len(_CACHE) > 4:
            _CACHE.clear()
        _CACHE[key] = _load_annotations(cfg, split)
    return _CACHE[key]


def _load_annotations(
    cfg: DetConfig, split: str
) -> tuple[DetectionAnnotations, Path | None, int | None]:
    d = cfg.data
    if d.source == "synthetic":
        seed = d.synthetic_seed if split == "train" else d.synthetic_seed + 7919
        n = d.synthetic_train if split == "train" else d.synthetic_val
        return (
            synthetic_annotations(n, seed, d.synthetic_min_side, d.synthetic_max_side),
            None,
            seed,
        )
    if d.source == "voc":
        if not d.voc_root:
            raise ConfigError("data.source=voc needs data.voc_root (the VOCdevkit/VOC20xx folder)")
        return (
            read_voc(d.voc_root, d.voc_train_split if split == "train" else d.voc_val_split),
            Path(d.voc_root),
            None,
        )
    json_path, images = (
        (d.train_json, d.train_images) if split == "train" else (d.val_json, d.val_images)
    )
    if not json_path:
        if split == "train":
            raise ConfigError(
                "data.source=coco needs data.train_json and data.train_images (--data.train_json PATH ...)"
            )
        return None, None, None
    if not images:
        images = str(Path(json_path).parent)
    return read_coco(json_path, contiguous_labels=d.contiguous_labels), Path(images), None


# -- whole-detector weights (ours or torchvision's) -----------------------------------------------
def whole_detector_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if any(k.startswith("rpn.") for k in sd) and any(k.startswith("roi_heads.") for k in sd):
        return sd
    return None


class DetectionTask(Task):
    name = "detection"
    config_class = DetConfig
    main_metric = "AP"
    default_preset = "faster_rcnn_r18_fpn_synthetic"

    def __init__(self) -> None:
        self.class_names: tuple[str, ...] = ()
        self.val_ann: DetectionAnnotations | None = None
        self.last_rows: np.ndarray | None = None
        self.last_metrics: dict[str, float] = {}
        self.skipped: set[str] = set()

    def presets(self):
        return PRESETS

    def finalize_config(self, cfg: DetConfig) -> DetConfig:
        ann, _, _ = load_annotations(cfg, "train")
        self.class_names = ann.class_names
        num = cfg.model.num_classes or len(ann.class_names)
        if num < len(ann.class_names):
            raise ConfigError(
                f"model.num_classes={num} but the data has {len(ann.class_names)} classes; set model.num_classes=0 to follow the data"
            )
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=num))

    # -- model ------------------------------------------------------------------------------
    def build_model(self, cfg: DetConfig) -> FasterRCNN:
        weights, whole = cfg.model.weights, None
        if weights and Path(weights).is_file():
            sd = extract_state_dict(read_checkpoint(weights), source=weights)
            whole = whole_detector_state_dict(sd)
            weights = None if whole is not None else sd
        backbone = cfg.model.create_backbone(("c2", "c3", "c4", "c5"), weights=weights)
        model = FasterRCNN(backbone, cfg.model)
        if whole is not None:
            missing, unexpected = model.load_state_dict(whole, strict=False)
            missing = [k for k in missing if not k.endswith("num_batches_tracked")]
            if missing or unexpected:
                raise ConfigError(
                    f"{cfg.model.weights} does not fit this detector: missing {missing[:8]}, unexpected "
                    f"{unexpected[:8]}; check model.num_classes, model.head_norm and model.rpn_conv_depth"
                )
            log.info("loaded a whole detector from %s", cfg.model.weights)
        return model

    # -- data -------------------------------------------------------------------------------
    def build_datasets(self, cfg: DetConfig):
        d = cfg.data
        train_ann, train_root, train_seed = load_annotations(cfg, "train")
        if d.drop_empty:
            train_ann = train_ann.subset(np.diff(train_ann.offsets) > 0)
        self.class_names = train_ann.class_names
        transform = DetTrainTransform(
            short_sizes=d.train_sizes, max_size=d.max_size, flip=d.flip, color=d.photometric,
            large_scale_jitter=d.large_scale_jitter, lsj_size=d.lsj_size,
        )  # fmt: skip
        train = DetectionDataset(
            train_ann,
            train_root,
            transform=transform,
            skip_bad_images=d.skip_bad_images,
            synthetic_seed=train_seed,
        )
        val_ann, val_root, val_seed = load_annotations(cfg, "val")
        self.val_ann = val_ann
        val = (
            None
            if val_ann is None
            else DetectionDataset(
                val_ann, val_root, skip_bad_images=d.skip_bad_images, synthetic_seed=val_seed
            )
        )
        return train, val

    def group_ids(self, dataset: DetectionDataset) -> list[int]:
        return dataset.group_ids()

    def collate(self, items: list[dict]) -> dict[str, Any]:
        return {
            "images": [it["image"] for it in items],
            "targets": [{"boxes": it["boxes"], "labels": it["labels"]} for it in items],
            "indices": [it["index"] for it in items],
            "skipped": [s for it in items for s in it["skipped"]],
        }

    def training_losses(self, model, batch):
        if batch["skipped"]:
            self._note_skipped(batch["skipped"])
        return model(batch["images"], batch["targets"])

    def _note_skipped(self, messages: list[str]) -> None:
        new = set(messages) - self.skipped
        for m in new:
            log.warning("skipped: %s", m)
        self.skipped |= new

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, loader: Iterable, ctx: EvalContext) -> dict[str, float]:
        cfg: DetConfig = ctx.cfg
        ann = self.val_ann
        if ann is None:
            raise ConfigError("no validation annotations (data.val_json)")
        rows = []
        for batch in loader:
            if batch["skipped"]:
                self._note_skipped(batch["skipped"])
            with ctx.autocast():
                results = detect_images(
                    model,
                    batch["images"],
                    tta=cfg.evaluation.tta,
                    tta_sizes=cfg.evaluation.tta_sizes,
                )
            for i, r in zip(batch["indices"], results):
                rows.append(
                    detections_to_rows(
                        int(ann.image_ids[i]),
                        r["boxes"].cpu().numpy(),
                        r["scores"].cpu().numpy(),
                        r["labels"].cpu().numpy(),
                        ann.category_ids,
                    )
                )
        local = np.concatenate(rows) if rows else np.zeros((0, 7))
        parts = D.gather_objects(local)  # every rank's predictions before scoring
        metrics = None
        if ctx.dist.is_main:
            self.last_rows = np.concatenate(parts)
            metrics = COCOEvaluator(ann, cfg.evaluation.backend).evaluate(self.last_rows)
        metrics = D.broadcast_object(metrics)
        self.last_metrics = metrics
        return metrics

    def checkpoint_meta(self, cfg: DetConfig, train_set) -> dict[str, Any]:
        a = train_set.ann
        return {"class_names": list(self.class_names), "category_ids": a.category_ids.tolist()}

    def after_training(self, model: nn.Module, cfg: DetConfig, ctx: EvalContext) -> None:
        if self.skipped:
            log.warning(
                "%d unreadable images were skipped (data.skip_bad_images=true)", len(self.skipped)
            )
        if self.last_rows is None or ctx.run_dir is None:
            return
        out = Path(ctx.run_dir) / "eval"
        write_results(self.last_rows, out / "predictions.json")
        table = ap_table(self.last_metrics, self.class_names)
        (out / "ap.md").write_text(table + "\n")
        print(table)

    # -- inference --------------------------------------------------------------------------
    def load_for_inference(
        self, path: str | Path, *, device: str = "auto", overrides: Sequence[str] = ()
    ) -> tuple[FasterRCNN, DetConfig, dict]:
        state, cfg = self.checkpoint_for_inference(path, overrides)
        model = self.build_model(cfg)
        load_model_weights(model, state)
        model.to(resolve_device(device)).eval()
        meta = state.get("meta") or {}
        meta.setdefault("class_names", [str(i) for i in range(1, cfg.model.num_classes + 1)])
        return model, cfg, meta

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
