"""Face-recognition configs and presets (arcface_torch's recipes, a CPU demo)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from resvision.heads.embedding.config import EmbeddingModelConfig
from resvision.tasks.engine.config import OptimConfig, RuntimeConfig, ScheduleConfig


@dataclass
class FaceModelConfig(EmbeddingModelConfig):
    """Backbone + embedding head. ``weights`` takes backbone weights, a whole resvision face
    model, or an InsightFace arcface_torch ``backbone.pth`` (trunk and "E" head load)."""

    backbone: str = "iresnet50"
    # off, as in arcface_torch's recipe: with every block starting as its shortcut the synthetic
    # preset stayed at chance (held-out accuracy 0.52 after 120 iterations, 0.77 with it off)
    zero_init_residual: bool | None = False


@dataclass
class MarginConfig:
    """Combined margin ``s * (cos(m1 theta + m2) - m3)`` and Partial FC."""

    kind: Literal["arcface", "cosface", "sphereface", "combined"] = "arcface"
    s: float = 64.0
    m1: float = 1.0  # used when kind=combined
    m2: float = 0.5
    m3: float = 0.0
    sample_rate: float = 1.0  # Partial FC: fraction of negative class centres scored per step
    interclass_filtering_threshold: float = 0.0  # > 0 zeroes negative logits above it


@dataclass
class FaceDataConfig:
    source: Literal["synthetic", "folder", "rec"] = "synthetic"
    root: str = ""  # folder: one sub-folder per identity; rec: folder with train.rec/train.idx
    landmarks: str = ""  # folder source: JSON/CSV of 5-point landmarks to align with
    num_classes: int = 0  # 0: counted from the data
    image_size: int = 112
    val_bins: tuple[str, ...] = ()  # InsightFace .bin verification sets (lfw.bin, cfp_fp.bin, ...)
    val_pairs: str = ""  # or an LFW-style pairs.txt ...
    val_root: str = ""  # ... with its image root
    batch_size: int = 128
    eval_batch_size: int = 256
    num_workers: int = 4
    synthetic_identities: int = 300
    synthetic_images: int = 16  # per identity
    synthetic_val_identities: int = 100  # held out: verification pairs are drawn from these
    synthetic_val_pairs: int = 600
    synthetic_seed: int = 0


@dataclass
class IJBConfig:
    """IJB-B / IJB-C as a validation metric beside the verification sets: a folder in
    InsightFace's IJB layout (``meta/`` + ``loose_crop/``; a subset of the real one keeps it
    quick), evaluated with the protocol of ``resvision face ijb`` (flip-summed embeddings)."""

    root: str = ""  # empty: off
    target: Literal["IJBB", "IJBC"] = "IJBC"
    normalize: bool = False  # True: each image's feature L2-normalized before pooling
    detector_score: bool = True  # weigh images by the meta file's faceness score
    one_to_n: bool = True  # also 1:N when the folder holds the gallery / probe files


@dataclass
class FaceConfig:
    model: FaceModelConfig = field(default_factory=FaceModelConfig)
    margin: MarginConfig = field(default_factory=MarginConfig)
    data: FaceDataConfig = field(default_factory=FaceDataConfig)
    ijb: IJBConfig = field(default_factory=IJBConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    renamed_keys: ClassVar[dict[str, str]] = {"model.sync_bn": "runtime.sync_bn"}


def arcface_r50_ms1mv3() -> FaceConfig:
    """arcface_torch's ms1mv3_r50 (LFW 99.83, CFP-FP 98.96, AgeDB-30 98.35): iResNet-50, ArcFace
    m=0.5 s=64, SGD 0.1 for 1024 images per step (8 GPUs x 128), wd 5e-4, 20 epochs with 2 warmup
    epochs and polynomial decay, fp16 autocast over the trunk. MS1MV3: 93,431 identities, 5.18M
    images (InsightFace RecordIO)."""
    iterations_per_epoch = 5_179_510 // 1024
    return FaceConfig(
        model=FaceModelConfig(backbone="iresnet50"),
        margin=MarginConfig(kind="arcface"),
        data=FaceDataConfig(
            source="rec",
            root="data/ms1m-retinaface-t1",
            num_classes=93431,
            val_bins=(
                "data/ms1m-retinaface-t1/lfw.bin",
                "data/ms1m-retinaface-t1/cfp_fp.bin",
                "data/ms1m-retinaface-t1/agedb_30.bin",
            ),
            batch_size=128,
        ),
        optim=OptimConfig(
            name="sgd",
            lr=0.1,
            momentum=0.9,
            weight_decay=5e-4,
            reference_batch_size=1024,
            decay_norm_and_bias=True,
        ),
        schedule=ScheduleConfig(
            iterations=20 * iterations_per_epoch,
            policy="poly",
            power=2.0,
            warmup_iterations=2 * iterations_per_epoch,
            warmup_factor=0.0,
        ),
        runtime=RuntimeConfig(
            output_dir="runs/face/arcface_r50_ms1mv3",
            amp="fp16",
            checkpoint_period=2000,
            eval_period=2000,
            log_period=50,
        ),
    )


def arcface_r100_ms1mv3() -> FaceConfig:
    """The same recipe with iResNet-100 (arcface_torch's ms1mv3_r100)."""
    cfg = arcface_r50_ms1mv3()
    cfg.model.backbone = "iresnet100"
    cfg.runtime.output_dir = "runs/face/arcface_r100_ms1mv3"
    return cfg


def iresnet18_synthetic() -> FaceConfig:
    """iResNet-18 trained from scratch on the built-in synthetic identities at 32x32 (CPU,
    minutes); held-out identities give the verification pairs."""
    return FaceConfig(
        model=FaceModelConfig(backbone="iresnet18", embedding_size=128, input_size=32),
        margin=MarginConfig(kind="arcface", s=32.0, m2=0.3),
        data=FaceDataConfig(
            source="synthetic",
            image_size=32,
            batch_size=32,
            eval_batch_size=64,
            num_workers=0,
            synthetic_identities=200,
            synthetic_images=12,
            synthetic_val_identities=80,
            synthetic_val_pairs=400,
        ),
        optim=OptimConfig(
            name="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, reference_batch_size=32
        ),
        schedule=ScheduleConfig(
            iterations=240, policy="cosine", warmup_iterations=30, warmup_factor=0.01
        ),
        runtime=RuntimeConfig(
            output_dir="runs/face/iresnet18_synthetic",
            checkpoint_period=120,
            eval_period=60,
            log_period=20,
        ),
    )


PRESETS = {f.__name__: f for f in (iresnet18_synthetic, arcface_r50_ms1mv3, arcface_r100_ms1mv3)}
