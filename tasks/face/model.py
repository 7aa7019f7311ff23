"""Building the face-embedding model and its margin classifier; foreign weights; checkpoints."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resvision.backbones.iresnet import IRESNET_LAYERS
from resvision.backbones.weights import detect_layout, extract_state_dict, read_checkpoint
from resvision.heads.embedding import EmbeddingModel, build_embedding_model
from resvision.heads.margin import ARCFACE, COSFACE, SPHEREFACE, CombinedMarginLoss, PartialFC
from resvision.tasks.engine.checkpoint import (
    build_with_weights,
    load_for_inference,
    model_state_dict,
)
from resvision.tasks.engine.config import apply_overrides
from resvision.tasks.engine.errors import CheckpointError
from resvision.tasks.engine.runtime import resolve_device

from .config import FaceConfig

TASK = "face"
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
    """The configured margin softmax (ArcFace, CosFace, SphereFace-style or combined)."""
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


def build_embedder(cfg: FaceConfig) -> EmbeddingModel:
    """The embedding model; ``model.weights`` may name backbone weights, a whole resvision face
    model or an arcface_torch ``backbone.pth``."""
    return build_with_weights(
        cfg.model.weights,
        lambda weights: build_embedding_model(cfg.model, backbone_weights=weights),
        whole_model=convert_face_state_dict,
        hint="check model.backbone, model.embedding_size and data.image_size",
    )


def build_training_model(cfg: FaceConfig) -> FaceTrainingModel:
    """The embedding model with the (Partial FC) margin classifier over ``data.num_classes``
    (built in that order: the classifier's initial weights are the next random numbers)."""
    embedder = build_embedder(cfg)
    classifier = PartialFC(
        margin_loss(cfg), cfg.model.embedding_size, cfg.data.num_classes, cfg.margin.sample_rate
    )
    return FaceTrainingModel(embedder, classifier)


def arcface_torch_state_dict(path: str | Path) -> dict[str, torch.Tensor] | None:
    """The state_dict of an arcface_torch ``backbone.pth`` (an iResNet trunk with its "E"
    head), or None when ``path`` is not one."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        sd = extract_state_dict(read_checkpoint(path), source=str(path))
    except (OSError, ValueError, RuntimeError):
        return None
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if detect_layout(sd) != "arcface_torch" or "fc.weight" not in sd:
        return None
    return sd


def arcface_torch_config(
    sd: Mapping[str, torch.Tensor], path: str | Path, overrides: Sequence[str] = ()
) -> FaceConfig:
    """The config that builds an arcface_torch ``backbone.pth``: its iResNet depth (read from
    the blocks per stage), its embedding size, 112 px crops, the file as ``model.weights``."""
    blocks = tuple(
        len({k.split(".")[1] for k in sd if k.startswith(f"layer{i}.")}) for i in range(1, 5)
    )
    names = {layers: name for name, layers in IRESNET_LAYERS.items()}
    if blocks not in names:
        raise ValueError(
            f"{str(path)!r} is an arcface_torch iResNet with {blocks} blocks per stage, which is "
            f"none of {', '.join(IRESNET_LAYERS)}"
        )
    cfg = FaceConfig()
    cfg.model = dataclasses.replace(
        cfg.model,
        backbone=names[blocks],
        embedding_size=int(sd["fc.weight"].shape[0]),
        input_size=112,
        weights=str(path),
    )
    cfg.data = dataclasses.replace(cfg.data, image_size=112)
    return apply_overrides(cfg, overrides)


def load_model(
    checkpoint: str | Path, *, device: str = "auto", overrides: Sequence[str] = ()
) -> tuple[EmbeddingModel, FaceConfig, dict[str, Any]]:
    """The trained embedding model (eval mode, the EMA's weights when the checkpoint has them),
    its config and meta, from a checkpoint file or a run folder, or an arcface_torch
    ``backbone.pth`` (then at 112 px, fp32, meta ``{"source": path}``)."""
    try:
        state, cfg = load_for_inference(
            checkpoint, task=TASK, config_class=FaceConfig, overrides=overrides
        )
    except CheckpointError:
        sd = arcface_torch_state_dict(checkpoint)
        if sd is None:
            raise
        cfg = arcface_torch_config(sd, checkpoint, overrides)
        embedder = build_embedder(cfg)
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights=None))
        meta: dict[str, Any] = {"source": str(checkpoint)}
        return embedder.to(resolve_device(device)).eval(), cfg, meta
    embedder = build_embedder(cfg)
    weights, _ = model_state_dict(state)
    embedder.load_state_dict(
        {k[len("embedder.") :]: v for k, v in weights.items() if k.startswith("embedder.")}
    )
    return embedder.to(resolve_device(device)).eval(), cfg, dict(state.get("meta") or {})
