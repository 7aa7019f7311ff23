"""Face-detection configs and presets (the PyTorch port's RetinaFace recipe, a lighter ResNet-18,
a CPU demo on synthetic scenes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from resvision.heads.retinaface.config import RetinaFaceConfig, RetinaFaceTestConfig
from resvision.tasks.engine.config import OptimConfig, RuntimeConfig, ScheduleConfig

WIDER_TRAIN_IMAGES = 12880  # images in WIDER FACE train (RetinaFace's label.txt)


@dataclass
class FaceDetModelConfig(RetinaFaceConfig):
    """Backbone options (``backbone``, ``weights``, ``norm``, ...) and RetinaFace's (``levels``,
    ``fpn_channels``, ``input_format``, ``priors``, ``loss``, ``test``). ``weights`` takes
    backbone weights (a path or tag), a resvision face-detection checkpoint, or the PyTorch
    port's whole model (``Resnet50_Final.pth``; needs ``input_format=bgr_mean``)."""


@dataclass
class FaceDetDataConfig:
    source: Literal["synthetic", "wider", "coco"] = "synthetic"
    train_labels: str = ""  # wider: RetinaFace's train/label.txt (images in train/images/)
    train_images: str = ""  # default: images/ next to label.txt (wider), the json's folder (coco)
    train_json: str = ""  # coco: faces with bbox and 5 keypoints
    val_mat_dir: str = ""  # wider: wider_face_val.mat + wider_{easy,medium,hard}_val.mat
    val_images: str = ""  # wider: WIDER_val/images; coco: the images of val_json
    val_json: str = ""
    image_size: int = 840  # training crops are resized to this square
    min_crop_scale: float = 0.3  # random square crops of 0.3-1.0 of the shorter side
    photometric: bool = True
    mirror: bool = True
    skip_bad_images: bool = False  # skip (count, report) unreadable training images
    batch_size: int = 6  # per process
    eval_batch_size: int = 1  # WIDER val images are evaluated at their own sizes
    num_workers: int = 4
    synthetic_train: int = 400
    synthetic_val: int = 60
    synthetic_seed: int = 0
    synthetic_min_side: int = 128
    synthetic_max_side: int = 192
    synthetic_max_faces: int = 5
    synthetic_min_face: int = 12
    synthetic_identities: int = 100


@dataclass
class FaceDetEvalConfig:
    # COCO evaluation of json data: vernier, faster-coco-eval or pycocotools (identical)
    backend: Literal["vernier", "faster_coco_eval", "pycocotools"] = "vernier"


@dataclass
class FaceDetConfig:
    model: FaceDetModelConfig = field(default_factory=FaceDetModelConfig)
    data: FaceDetDataConfig = field(default_factory=FaceDetDataConfig)
    evaluation: FaceDetEvalConfig = field(default_factory=FaceDetEvalConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


def _epochs(epochs: int, batch: int) -> int:
    return epochs * -(-WIDER_TRAIN_IMAGES // batch)


def retinaface_r50() -> FaceDetConfig:
    """The PyTorch port's RetinaFace-R50 recipe (WIDER FACE val easy / medium / hard AP 95.48 /
    94.04 / 84.43 at original scale with its released model): ResNet-50 from torchvision's
    ImageNet weights with trainable batch norm, the port's input convention (BGR minus
    104/117/123), 840 px crops, 24 images per step (6 x 4 GPUs), SGD 1e-3 momentum 0.9, weight
    decay 5e-4 on every parameter, 100 epochs with the rate divided by 10 at epochs 70 and 90,
    box loss weight 2, no warmup."""
    return FaceDetConfig(
        model=FaceDetModelConfig(
            backbone="resnet50",
            weights="torchvision:IMAGENET1K_V1",
            norm="bn",
            input_format="bgr_mean",
        ),
        data=FaceDetDataConfig(
            source="wider",
            train_labels="data/widerface/train/label.txt",
            val_mat_dir="data/widerface/ground_truth",
            val_images="data/widerface/val/images",
            image_size=840,
            batch_size=6,
        ),
        optim=OptimConfig(
            name="sgd",
            lr=1e-3,
            momentum=0.9,
            weight_decay=5e-4,
            decay_norm_and_bias=True,
            reference_batch_size=24,
        ),
        schedule=ScheduleConfig(
            iterations=_epochs(100, 24),
            policy="multistep",
            steps=(_epochs(70, 24), _epochs(90, 24)),
            warmup_iterations=0,
        ),
        runtime=RuntimeConfig(
            output_dir="runs/face_detection/retinaface_r50",
            checkpoint_period=2000,
            eval_period=_epochs(10, 24),
            log_period=50,
        ),
    )


def retinaface_r18() -> FaceDetConfig:
    """A lighter RetinaFace: ResNet-18 with a 128-channel FPN on the backbone's own input
    normalization, 640 px crops and 32 images per step (the port's MobileNet recipe: SGD 1e-3,
    250 epochs, steps at 190 and 220)."""
    cfg = retinaface_r50()
    cfg.model = FaceDetModelConfig(
        backbone="resnet18", weights="torchvision:IMAGENET1K_V1", norm="bn", fpn_channels=128
    )
    cfg.data.image_size = 640
    cfg.data.batch_size = 32
    cfg.optim.reference_batch_size = 32
    cfg.schedule = ScheduleConfig(
        iterations=_epochs(250, 32),
        policy="multistep",
        steps=(_epochs(190, 32), _epochs(220, 32)),
        warmup_iterations=0,
    )
    cfg.runtime.output_dir = "runs/face_detection/retinaface_r18"
    cfg.runtime.eval_period = _epochs(25, 32)
    return cfg


def retinaface_r18_synthetic() -> FaceDetConfig:
    """ResNet-18 RetinaFace (64-channel FPN and SSH, leaky ReLU as the port's small models)
    trained from scratch on the built-in synthetic scenes at 160 px: minutes on a CPU."""
    return FaceDetConfig(
        model=FaceDetModelConfig(
            backbone="resnet18",
            norm="bn",
            fpn_channels=64,
            test=RetinaFaceTestConfig(score_threshold=0.05, max_detections=100),
        ),
        data=FaceDetDataConfig(
            source="synthetic",
            image_size=160,
            batch_size=8,
            eval_batch_size=8,
            num_workers=0,
        ),
        optim=OptimConfig(
            name="sgd", lr=0.02, momentum=0.9, weight_decay=5e-4, reference_batch_size=8
        ),
        schedule=ScheduleConfig(
            iterations=300, policy="cosine", warmup_iterations=30, warmup_factor=0.01
        ),
        runtime=RuntimeConfig(
            output_dir="runs/face_detection/retinaface_r18_synthetic",
            checkpoint_period=150,
            eval_period=150,
            log_period=20,
        ),
    )


PRESETS = {f.__name__: f for f in (retinaface_r18_synthetic, retinaface_r50, retinaface_r18)}
