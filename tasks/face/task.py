"""The face-recognition task: embedding model + margin loss (Partial FC), verification metrics."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from resvision.backbones.weights import detect_layout, extract_state_dict, read_checkpoint
from resvision.datasets.face import FaceFolder, RecordFaceDataset, SyntheticFaces, VerificationSet
from resvision.heads.embedding import EmbeddingModel, build_embedding_model
from resvision.heads.margin import ARCFACE, COSFACE, SPHEREFACE, CombinedMarginLoss, PartialFC
from resvision.tasks.engine import distributed as D
from resvision.tasks.engine.errors import ConfigError
from resvision.tasks.engine.task import EvalContext, Task

from .config import PRESETS, FaceConfig
from .verification import evaluate_embeddings

log = logging.getLogger(__name__)
ARCFACE_HEAD = ("bn2.", "fc.", "features.")


class FaceTrainingModel(nn.Module):
    """The embedding model and the margin classifier: losses in training, embeddings otherwise."""

    def __init__(self, embedder: EmbeddingModel, classifier: PartialFC) -> None:
        super().__init__()
        self.embedder = embedder
        self.classifier = classifier

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        embeddings = self.embedder(images)
        if self.training and labels is not None:
            return {"loss_margin": self.classifier(embeddings, labels)}
        return embeddings


def margin_loss(cfg: FaceConfig) -> CombinedMarginLoss:
    m = cfg.margin
    preset = {"arcface": ARCFACE, "cosface": COSFACE, "sphereface": SPHEREFACE}
    if m.kind == "combined":
        margins = {"m1": m.m1, "m2": m.m2, "m3": m.m3}
    else:
        margins = dict(preset[m.kind])
        if m.kind == "arcface":
            margins["m2"] = m.m2
    return CombinedMarginLoss(
        m.s, **margins, interclass_filtering_threshold=m.interclass_filtering_threshold
    )


def convert_face_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """A whole embedding model in resvision's layout (``backbone.*``, ``head.*``), from an
    arcface_torch ``backbone.pth`` or a resvision face model; None for backbone-only weights."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if any(k.startswith("embedder.") for k in sd):
        return {k[len("embedder.") :]: v for k, v in sd.items() if k.startswith("embedder.")}
    if any(k.startswith("head.") for k in sd) and any(k.startswith("backbone.") for k in sd):
        return dict(sd)
    if detect_layout(sd) == "arcface_torch" and any(k.startswith(ARCFACE_HEAD) for k in sd):
        return {
            ("head." if k.startswith(ARCFACE_HEAD) else "backbone.") + k: v for k, v in sd.items()
        }
    return None


class VerificationSuite(Dataset):
    """Several verification sets end to end; items carry their set index."""

    def __init__(self, sets: Sequence[VerificationSet]) -> None:
        self.sets = list(sets)
        self.starts = np.cumsum([0] + [len(s) for s in self.sets])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index) -> dict:
        index = index[0] if isinstance(index, tuple) else index
        k = int(np.searchsorted(self.starts, index, side="right") - 1)
        item = self.sets[k][index - int(self.starts[k])]
        return {"image": item["image"], "set": k, "index": index}


class FaceTask(Task):
    name = "face"
    config_class = FaceConfig
    main_metric = "acc"
    default_preset = "iresnet18_synthetic"

    def __init__(self) -> None:
        self.num_classes = 0
        self.val_suite: VerificationSuite | None = None

    def presets(self):
        return PRESETS

    def finalize_config(self, cfg: FaceConfig) -> FaceConfig:
        d = cfg.data
        num = d.num_classes
        if not num:
            if d.source == "synthetic":
                num = d.synthetic_identities
            elif d.source == "folder":
                num = FaceFolder(d.root, image_size=d.image_size).num_classes
            else:
                log.info("counting identities in %s (set data.num_classes to skip this)", d.root)
                num = RecordFaceDataset(d.root, image_size=d.image_size).num_classes
        self.num_classes = num
        if cfg.model.input_size != d.image_size:
            cfg = dataclasses.replace(
                cfg, model=dataclasses.replace(cfg.model, input_size=d.image_size)
            )
        return dataclasses.replace(cfg, data=dataclasses.replace(d, num_classes=num))

    # -- model ------------------------------------------------------------------------------
    def build_embedder(self, cfg: FaceConfig) -> EmbeddingModel:
        weights, whole = cfg.model.weights, None
        if weights and Path(weights).is_file():
            sd = extract_state_dict(read_checkpoint(weights), source=weights)
            whole = convert_face_state_dict(sd)
            weights = None if whole is not None else sd
        model = build_embedding_model(cfg.model, cfg.model, backbone_weights=weights)
        if whole is not None:
            missing, unexpected = model.load_state_dict(whole, strict=False)
            missing = [k for k in missing if not k.endswith("num_batches_tracked")]
            if missing or unexpected:
                raise ConfigError(
                    f"{cfg.model.weights} does not fit this embedding model: missing {missing[:8]}, "
                    f"unexpected {unexpected[:8]}; check model.backbone, model.embedding_size, data.image_size"
                )
        return model

    def build_model(self, cfg: FaceConfig) -> FaceTrainingModel:
        embedder = self.build_embedder(cfg)
        classifier = PartialFC(
            margin_loss(cfg), cfg.model.embedding_size, cfg.data.num_classes, cfg.margin.sample_rate
        )
        return FaceTrainingModel(embedder, classifier)

    def ddp_ignored_parameters(self, model: nn.Module) -> list[str]:
        return ["classifier.weight"]  # sharded per rank: never averaged across ranks

    # -- data -------------------------------------------------------------------------------
    def build_datasets(self, cfg: FaceConfig):
        d = cfg.data
        if d.source == "synthetic":
            train = SyntheticFaces(
                d.synthetic_identities,
                d.synthetic_images,
                image_size=d.image_size,
                seed=d.synthetic_seed,
            )
            held_out = SyntheticFaces(
                d.synthetic_val_identities,
                d.synthetic_images,
                image_size=d.image_size,
                seed=d.synthetic_seed + 1,
            )
            sets = [held_out.verification_set(d.synthetic_val_pairs)]
        else:
            train = (
                FaceFolder(d.root, image_size=d.image_size, landmarks=d.landmarks or None)
                if d.source == "folder"
                else RecordFaceDataset(d.root, image_size=d.image_size)
            )
            sets = [VerificationSet.from_bin(b, d.image_size) for b in d.val_bins]
            if d.val_pairs:
                sets.append(VerificationSet.from_pairs(d.val_pairs, d.val_root, d.image_size))
        self.val_suite = VerificationSuite(sets) if sets else None
        return train, self.val_suite

    def collate(self, items: list[dict]) -> dict[str, Any]:
        batch = {"images": torch.stack([it["image"] for it in items])}
        if "label" in items[0]:
            batch["targets"] = torch.tensor([it["label"] for it in items])
        else:
            batch["sets"] = [it["set"] for it in items]
            batch["indices"] = [it["index"] for it in items]
        return batch

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, loader: Iterable, ctx: EvalContext) -> dict[str, float]:
        embedder = model.embedder if isinstance(model, FaceTrainingModel) else model
        indices, embeddings = [], []
        for batch in loader:
            with ctx.autocast():
                out = embedder.embed(batch["images"], flip=True)
            embeddings.append(out.float().cpu().numpy())
            indices += batch["indices"]
        local = (
            np.array(indices, np.int64),
            np.concatenate(embeddings) if embeddings else np.zeros((0, embedder.embedding_size)),
        )
        parts = D.gather_objects(local)  # every rank's shard before scoring
        idx = np.concatenate([p[0] for p in parts])
        emb = np.concatenate([p[1] for p in parts])[np.argsort(idx)]
        suite = self.val_suite
        if suite is None or len(emb) != len(suite):
            raise ValueError("evaluation needs the verification sets of build_datasets()")
        out: dict[str, float] = {}
        accs = []
        for k, vset in enumerate(suite.sets):
            name = vset.name
            report = evaluate_embeddings(
                emb[int(suite.starts[k]) : int(suite.starts[k + 1])], vset.issame
            )
            accs.append(report["acc"])
            out |= {
                f"{name}/{key}": value
                for key, value in report.items()
                if not key.startswith("threshold")
            }
            out[f"{name}/threshold_cos@far1e-3"] = report["threshold_cos@far1e-3"]
        out["acc"] = float(np.mean(accs)) if accs else float("nan")
        return out

    def checkpoint_meta(self, cfg: FaceConfig, train_set) -> dict[str, Any]:
        return {
            "num_classes": cfg.data.num_classes,
            "embedding_size": cfg.model.embedding_size,
            "image_size": cfg.data.image_size,
        }

    # -- inference --------------------------------------------------------------------------
    def load_for_inference(
        self, path: str | Path, *, device: str = "auto", overrides: Sequence[str] = ()
    ) -> tuple[EmbeddingModel, FaceConfig]:
        from resvision.tasks.engine.loop import resolve_device

        state, cfg = self.checkpoint_for_inference(path, overrides)
        embedder = self.build_embedder(cfg)
        weights = state["ema"]["module"] if state.get("ema") else state["model"]
        embedder.load_state_dict(
            {k[len("embedder.") :]: v for k, v in weights.items() if k.startswith("embedder.")}
        )
        return embedder.to(resolve_device(device)).eval(), cfg

    def command(self, verb: str, argv: list[str]) -> int:
        from . import cli

        commands = {
            "export": cli.export_main,
            "benchmark": cli.benchmark_main,
            "face": cli.face_main,
            "predict": cli.embed_main,
        }
        if verb not in commands:
            return super().command(verb, argv)
        return commands[verb](argv)
