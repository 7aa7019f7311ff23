"""The face-detection task: data, RetinaFace and its losses, evaluation for the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from resvision.datasets.detection import coco_ground_truth
from resvision.datasets.face_detection import (
    FaceDetectionDataset,
    RetinaFaceTrainTransform,
    SyntheticFaceScenes,
    read_coco_faces,
    read_retinaface_labels,
    read_wider_val,
)
from resvision.heads.retinaface import RetinaFace
from resvision.tasks.engine.errors import ConfigError
from resvision.tasks.engine.task import EvalContext, Evaluator, Task

from .config import PRESETS, FaceDetConfig
from .evaluation import FaceBoxEvaluator, WiderFaceEvaluator
from .model import build_model

VAL_SEED_OFFSET = 7919  # the synthetic validation scenes' seed: data.synthetic_seed + this


def synthetic_scenes(cfg: FaceDetConfig, split: str) -> SyntheticFaceScenes:
    """The train or val scenes of a synthetic config (val: another seed, other people)."""
    d = cfg.data
    return SyntheticFaceScenes(
        seed=d.synthetic_seed + (VAL_SEED_OFFSET if split == "val" else 0),
        min_side=d.synthetic_min_side,
        max_side=d.synthetic_max_side,
        max_faces=d.synthetic_max_faces,
        min_face=d.synthetic_min_face,
        num_identities=d.synthetic_identities,
        # other people than the face task's synthetic identities (seeds 0 and 1 by default)
        identity_seed=101 + 2 * d.synthetic_seed + (1 if split == "val" else 0),
    )


def _json_folder(json_path: str, images: str) -> Path:
    return Path(images) if images else Path(json_path).parent


class FaceDetectionTask(Task):
    name = "face-detection"
    config_class = FaceDetConfig
    main_metric = "AP50"  # COCO AP at IoU 0.5 (json, synthetic); the hard setting (WIDER)
    default_preset = "retinaface_r18_synthetic"

    def presets(self):
        return PRESETS

    # -- data -------------------------------------------------------------------------------
    def build_train_set(self, cfg: FaceDetConfig) -> FaceDetectionDataset:
        d = cfg.data
        transform = RetinaFaceTrainTransform(
            image_size=d.image_size,
            min_scale=d.min_crop_scale,
            photometric=d.photometric,
            mirror=d.mirror,
        )
        scenes, root = None, None
        if d.source == "synthetic":
            scenes = synthetic_scenes(cfg, "train")
            ann = scenes.annotations(d.synthetic_train)
        elif d.source == "wider":
            if not d.train_labels:
                raise ConfigError(
                    "data.source=wider needs data.train_labels (RetinaFace's train/label.txt)"
                )
            ann = read_retinaface_labels(d.train_labels)
            root = Path(d.train_images or Path(d.train_labels).parent / "images")
        else:
            if not d.train_json:
                raise ConfigError("data.source=coco needs data.train_json (and data.train_images)")
            ann = read_coco_faces(d.train_json)
            root = _json_folder(d.train_json, d.train_images)
        return FaceDetectionDataset(
            ann, root, transform=transform, skip_bad_images=d.skip_bad_images, scenes=scenes
        )

    def build_val_set(self, cfg: FaceDetConfig) -> FaceDetectionDataset | None:
        d = cfg.data
        if d.source == "synthetic":
            scenes = synthetic_scenes(cfg, "val")
            return FaceDetectionDataset(scenes.annotations(d.synthetic_val), None, scenes=scenes)
        if d.source == "wider":
            if not d.val_mat_dir:
                return None
            if not d.val_images:
                raise ConfigError("data.val_mat_dir needs data.val_images (WIDER_val/images)")
            wider = read_wider_val(d.val_mat_dir)
            return FaceDetectionDataset(wider.annotations(), d.val_images, wider=wider)
        if not d.val_json:
            return None
        return FaceDetectionDataset(
            read_coco_faces(d.val_json), _json_folder(d.val_json, d.val_images)
        )

    def collate(self, items: list[dict]) -> dict[str, Any]:
        keys = ("boxes", "landmarks", "has_landmarks")
        return {
            "images": [it["image"] for it in items],
            "targets": [{k: it[k] for k in keys} for it in items],
            "indices": [it["index"] for it in items],
            "skipped": [s for it in items for s in it["skipped"]],
        }

    # -- model and losses -------------------------------------------------------------------
    def build_model(self, cfg: FaceDetConfig) -> RetinaFace:
        return build_model(cfg)

    def training_losses(self, model: nn.Module, batch: dict[str, Any]):
        if batch["skipped"]:
            self.note_skipped(batch["skipped"])
        return model(batch["images"], batch["targets"])

    # -- evaluation -------------------------------------------------------------------------
    def build_evaluator(self, cfg: FaceDetConfig, dataset: FaceDetectionDataset) -> Evaluator:
        if dataset.wider is not None:
            return WiderFaceEvaluator(dataset.wider)
        truth = None
        if cfg.data.source == "coco":  # the json's own boxes, as pycocotools scores them
            truth = faces_only(coco_ground_truth(cfg.data.val_json))
        return FaceBoxEvaluator(dataset.ann, cfg.evaluation.backend, truth)

    def predict_batch(self, model: nn.Module, batch: dict[str, Any], ctx: EvalContext):
        if batch["skipped"]:
            self.note_skipped(batch["skipped"])
        with ctx.autocast():
            return model(batch["images"])

    def checkpoint_meta(self, cfg: FaceDetConfig, train_set: FaceDetectionDataset) -> dict:
        return {"num_train_faces": int(train_set.ann.num_boxes)}


def faces_only(ground_truth: dict) -> dict:
    """A COCO dict restricted to the category named "face" when there is one."""
    face_ids = {c["id"] for c in ground_truth["categories"] if c.get("name") == "face"}
    if not face_ids:
        return ground_truth
    anns = [a for a in ground_truth["annotations"] if a.get("category_id") in face_ids]
    return ground_truth | {"annotations": anns}
