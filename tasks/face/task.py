"""The face-recognition task: embedding model + margin loss (Partial FC), verification metrics
(and IJB-B / IJB-C ones when the config names an IJB folder)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from resvision.datasets.face import (
    FaceFolder,
    IJBImages,
    RecordFaceDataset,
    SyntheticFaces,
    VerificationSet,
    VerificationSuite,
    read_ijb_meta,
)
from resvision.tasks.engine.task import EvalContext, Task

from .config import PRESETS, FaceConfig
from .evaluation import VerificationEvaluator
from .model import FaceTrainingModel, build_training_model

log = logging.getLogger(__name__)


class FaceTask(Task):
    name = "face"
    config_class = FaceConfig
    main_metric = "acc"
    default_preset = "iresnet18_synthetic"

    def presets(self):
        return PRESETS

    # -- data -------------------------------------------------------------------------------
    def build_train_set(self, cfg: FaceConfig) -> Dataset:
        d = cfg.data
        if d.source == "synthetic":
            return SyntheticFaces(
                d.synthetic_identities,
                d.synthetic_images,
                image_size=d.image_size,
                seed=d.synthetic_seed,
            )
        if d.source == "folder":
            return FaceFolder(d.root, image_size=d.image_size, landmarks=d.landmarks or None)
        return RecordFaceDataset(d.root, image_size=d.image_size)

    def finalize_config(self, cfg: FaceConfig, train_set: Dataset) -> FaceConfig:
        d = cfg.data
        num = d.num_classes
        if not num:
            if d.source == "rec":
                log.info("counting identities in %s (set data.num_classes to skip this)", d.root)
            num = train_set.num_classes
        if cfg.model.input_size != d.image_size:
            cfg = dataclasses.replace(
                cfg, model=dataclasses.replace(cfg.model, input_size=d.image_size)
            )
        return dataclasses.replace(cfg, data=dataclasses.replace(d, num_classes=num))

    def build_val_set(self, cfg: FaceConfig) -> VerificationSuite | None:
        d = cfg.data
        ijb = None
        if cfg.ijb.root:
            meta = read_ijb_meta(cfg.ijb.root, cfg.ijb.target, one_to_n=cfg.ijb.one_to_n)
            ijb = IJBImages.from_meta(meta, image_size=d.image_size)
        if d.source == "synthetic":
            held_out = SyntheticFaces(
                d.synthetic_val_identities,
                d.synthetic_images,
                image_size=d.image_size,
                seed=d.synthetic_seed + 1,
            )
            sets = [held_out.verification_set(d.synthetic_val_pairs)]
        else:
            sets = [VerificationSet.from_bin(b, d.image_size) for b in d.val_bins]
            if d.val_pairs:
                sets.append(VerificationSet.from_pairs(d.val_pairs, d.val_root, d.image_size))
        return VerificationSuite(sets, ijb) if sets or ijb is not None else None

    def collate(self, items: list[dict]) -> dict[str, Any]:
        batch = {"images": torch.stack([it["image"] for it in items])}
        if "label" in items[0]:
            batch["targets"] = torch.tensor([it["label"] for it in items])
        else:
            batch["sets"] = [it["set"] for it in items]
            batch["indices"] = [it["index"] for it in items]
            batch["errors"] = [it.get("error", "") for it in items]
        return batch

    # -- model ------------------------------------------------------------------------------
    def build_model(self, cfg: FaceConfig) -> FaceTrainingModel:
        return build_training_model(cfg)

    def ddp_ignored_parameters(self, model: nn.Module) -> list[str]:
        return ["classifier.weight"]  # sharded per rank: never averaged across ranks

    # -- evaluation -------------------------------------------------------------------------
    def build_evaluator(self, cfg: FaceConfig, dataset: VerificationSuite) -> VerificationEvaluator:
        return VerificationEvaluator(dataset, cfg.ijb)

    def predict_batch(self, model: nn.Module, batch: dict[str, Any], ctx: EvalContext):
        """Flip-summed embeddings, not normalized (the evaluator normalizes them for the
        verification sets; IJB templates weigh images by their length)."""
        embedder = model.embedder if isinstance(model, FaceTrainingModel) else model
        with ctx.autocast():
            return embedder.embed(batch["images"], flip=True, normalize=False)

    def checkpoint_meta(self, cfg: FaceConfig, train_set: Dataset) -> dict[str, Any]:
        return {
            "num_classes": cfg.data.num_classes,
            "embedding_size": cfg.model.embedding_size,
            "image_size": cfg.data.image_size,
        }
