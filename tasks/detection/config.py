"""Detection configs and presets (detectron2's and torchvision's recipes, CPU demos), for
Faster R-CNN and Mask R-CNN (the same model with ``model.mask.enabled``)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar, Literal

from resvision.heads.detection.config import (
    LEGACY_KEYS,
    AnchorConfig,
    BoxLossConfig,
    FasterRCNNConfig,
    MaskHeadConfig,
    RoIHeadsConfig,
    RPNConfig,
    TestSizeConfig,
)
from resvision.tasks.engine.config import OptimConfig, RuntimeConfig, ScheduleConfig

DETECTRON2_SIZES = (640, 672, 704, 736, 768, 800)


@dataclass
class DetModelConfig(FasterRCNNConfig):
    """Backbone options (``backbone``, ``weights``, ``frozen_stages``, ``norm``, ...) and the
    Faster R-CNN options by part (``anchors``, ``rpn``, ``roi_heads``, ``box_loss``, ``mask``,
    ``test``); ``mask.enabled`` makes it a Mask R-CNN. ``weights`` takes backbone weights (path
    or tag) or a whole detector: a resvision detection checkpoint or torchvision's
    ``fasterrcnn_resnet50_fpn[_v2]`` / ``maskrcnn_resnet50_fpn[_v2]`` state_dict.
    ``num_classes=0`` takes the number of classes from the data."""

    num_classes: int = 0
    norm: str = "frozen_bn"
    frozen_stages: int = 2  # stem + c2, as detectron2 (freeze_at=2) and torchvision (3 trainable)


@dataclass
class DetDataConfig:
    source: Literal["synthetic", "coco", "voc", "masks"] = "synthetic"
    train_json: str = ""  # coco: any COCO-format json + its image folder
    train_images: str = ""
    val_json: str = ""
    val_images: str = ""
    # masks: instance mask folders (VOC's SegmentationObject / SegmentationClass PNGs, same
    # stems as the images in *_images) and the class names file (background first)
    train_masks: str = ""
    train_class_masks: str = ""
    val_masks: str = ""
    val_class_masks: str = ""
    class_names: str = ""
    voc_root: str = ""  # voc: VOCdevkit/VOC20xx
    voc_train_split: str = "trainval"
    voc_val_split: str = "test"
    contiguous_labels: bool = True  # false: labels are the category ids (torchvision's COCO models)
    train_sizes: tuple[int, ...] = DETECTRON2_SIZES  # shorter side, chosen per image
    max_size: int = 1333
    flip: bool = True
    photometric: bool = False
    large_scale_jitter: tuple[float, float] | None = None  # e.g. [0.1, 2.0] (replaces the resize)
    lsj_size: int = 1024
    drop_empty: bool = False  # drop training images without boxes (kept as negatives by default)
    skip_bad_images: bool = False  # skip (count, report) unreadable images instead of failing
    batch_size: int = 2  # per process
    eval_batch_size: int = 2
    num_workers: int = 4
    synthetic_train: int = 400
    synthetic_val: int = 64
    synthetic_seed: int = 0
    synthetic_min_side: int = 128
    synthetic_max_side: int = 224


@dataclass
class DetEvalConfig:
    # COCO evaluation: vernier (fastest), faster-coco-eval or pycocotools: identical numbers
    backend: Literal["vernier", "faster_coco_eval", "pycocotools"] = "vernier"
    mask_threshold: float = 0.5  # Mask R-CNN: a pixel is in the mask at this probability
    tta: bool = False  # horizontal flip and several scales, merged by NMS
    tta_sizes: tuple[int, ...] = (640, 800, 960)


@dataclass
class DetConfig:
    model: DetModelConfig = field(default_factory=DetModelConfig)
    data: DetDataConfig = field(default_factory=DetDataConfig)
    evaluation: DetEvalConfig = field(default_factory=DetEvalConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    # keys of configs written by earlier versions
    renamed_keys: ClassVar[dict[str, str]] = {
        "model.sync_bn": "runtime.sync_bn",
        **{f"model.{old}": f"model.{new}" for old, new in LEGACY_KEYS.items()},
    }


def faster_rcnn_r50_fpn_1x_coco() -> DetConfig:
    """detectron2's COCO-Detection/faster_rcnn_R_50_FPN_1x (box AP 37.9): 16 images per step,
    SGD 0.02, 90k iterations with steps at 60k and 80k, 1000 warmup iterations, shorter side
    640-800 (max 1333), L1 box loss, aligned RoIAlign (adaptive sampling), FrozenBN, stem + c2
    frozen. The backbone starts from torchvision's ImageNet weights (detectron2 uses MSRA's)."""
    return DetConfig(
        model=DetModelConfig(
            backbone="resnet50",
            weights="torchvision:IMAGENET1K_V1",
            rpn=RPNConfig(post_nms_top_n_train=1000),
            roi_heads=RoIHeadsConfig(aligned=True, sampling_ratio=0),
            box_loss=BoxLossConfig(kind="l1", beta=0.0),
        ),
        data=DetDataConfig(
            source="coco",
            train_json="data/coco/annotations/instances_train2017.json",
            train_images="data/coco/train2017",
            val_json="data/coco/annotations/instances_val2017.json",
            val_images="data/coco/val2017",
        ),
        optim=OptimConfig(
            name="sgd", lr=0.02, momentum=0.9, weight_decay=1e-4, reference_batch_size=16
        ),
        schedule=ScheduleConfig(
            iterations=90000,
            policy="multistep",
            steps=(60000, 80000),
            warmup_iterations=1000,
            warmup_factor=0.001,
        ),
        runtime=RuntimeConfig(
            output_dir="runs/detection/faster_rcnn_r50_fpn_1x_coco",
            checkpoint_period=5000,
            eval_period=10000,
            log_period=20,
        ),
    )


def faster_rcnn_r50_fpn_3x_coco() -> DetConfig:
    """detectron2's faster_rcnn_R_50_FPN_3x (box AP 40.2): 270k iterations, steps 210k/250k."""
    cfg = faster_rcnn_r50_fpn_1x_coco()
    return replace(
        cfg,
        schedule=replace(cfg.schedule, iterations=270000, steps=(210000, 250000)),
        runtime=replace(cfg.runtime, output_dir="runs/detection/faster_rcnn_r50_fpn_3x_coco"),
    )


def fasterrcnn_resnet50_fpn_torchvision() -> DetConfig:
    """torchvision's ``fasterrcnn_resnet50_fpn`` exactly (its state_dicts load; labels are COCO
    category ids 1..90) with its reference recipe: 26 epochs of 16 images (about 190k
    iterations), SGD 0.02, steps at epochs 16 and 22, shorter side 800."""
    return DetConfig(
        model=DetModelConfig(
            backbone="resnet50", weights="torchvision:IMAGENET1K_V1", num_classes=90
        ),
        data=replace(
            faster_rcnn_r50_fpn_1x_coco().data, contiguous_labels=False, train_sizes=(800,)
        ),
        optim=OptimConfig(
            name="sgd",
            lr=0.02,
            momentum=0.9,
            weight_decay=1e-4,
            reference_batch_size=16,
            decay_norm_and_bias=True,
        ),
        schedule=ScheduleConfig(
            iterations=190600,
            policy="multistep",
            steps=(117300, 161300),
            warmup_iterations=1000,
            warmup_factor=0.001,
        ),
        runtime=RuntimeConfig(
            output_dir="runs/detection/fasterrcnn_resnet50_fpn_torchvision",
            checkpoint_period=5000,
            eval_period=7330,
        ),
    )


def fasterrcnn_resnet50_fpn_v2_torchvision() -> DetConfig:
    """torchvision's ``fasterrcnn_resnet50_fpn_v2`` (batch norm in the FPN and a 4-conv box head,
    2-conv RPN head, trainable batch norm in the backbone); same schedule as v1 here."""
    cfg = fasterrcnn_resnet50_fpn_torchvision()
    return replace(
        cfg,
        model=replace(
            cfg.model, head_norm=True, rpn=replace(cfg.model.rpn, conv_depth=2), norm="bn"
        ),
        runtime=replace(
            cfg.runtime, output_dir="runs/detection/fasterrcnn_resnet50_fpn_v2_torchvision"
        ),
    )


def faster_rcnn_r18_fpn_synthetic() -> DetConfig:
    """ResNet-18 FPN (64 channels) trained from scratch on the built-in synthetic shapes; sized
    for a CPU: small images (shorter side 112-160), light heads."""
    return DetConfig(
        model=DetModelConfig(
            backbone="resnet18",
            norm="bn",
            frozen_stages=0,
            fpn_channels=64,
            anchors=AnchorConfig(sizes=(16, 32, 64, 128, 256)),
            rpn=RPNConfig(
                pre_nms_top_n_train=600,
                post_nms_top_n_train=300,
                pre_nms_top_n_test=300,
                post_nms_top_n_test=150,
            ),
            roi_heads=RoIHeadsConfig(batch_size_per_image=64, aligned=True),
            box_loss=BoxLossConfig(kind="l1", beta=0.0),
            test=TestSizeConfig(min_size=144, max_size=224),
        ),
        data=DetDataConfig(
            source="synthetic",
            train_sizes=(112, 128, 144, 160),
            max_size=224,
            batch_size=4,
            eval_batch_size=8,
            num_workers=0,
            synthetic_min_side=112,
            synthetic_max_side=176,
        ),
        optim=OptimConfig(
            name="sgd", lr=0.02, momentum=0.9, weight_decay=1e-4, reference_batch_size=8
        ),
        schedule=ScheduleConfig(
            iterations=240, policy="cosine", warmup_iterations=40, warmup_factor=0.01
        ),
        runtime=RuntimeConfig(
            output_dir="runs/detection/faster_rcnn_r18_fpn_synthetic",
            checkpoint_period=120,
            eval_period=120,
            log_period=20,
        ),
    )


# -- Mask R-CNN: the same presets with the mask branch, best.pt chosen by mask AP ----------------
def _with_masks(cfg: DetConfig, output_dir: str) -> DetConfig:
    return replace(
        cfg,
        model=replace(cfg.model, mask=MaskHeadConfig(enabled=True)),
        runtime=replace(cfg.runtime, output_dir=output_dir, best_metric="mask/AP"),
    )


def mask_rcnn_r50_fpn_1x_coco() -> DetConfig:
    """detectron2's COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x (box AP 38.6, mask AP 35.2):
    faster_rcnn_r50_fpn_1x_coco's recipe with the mask branch (14x14 aligned RoIAlign with
    adaptive sampling, four 3x3 convolutions, a 2x deconvolution, 28x28 masks per class).
    Mask targets are torchvision's (each ground-truth mask resampled on the RoI), where
    detectron2 rasterizes the polygons inside the RoI."""
    return _with_masks(faster_rcnn_r50_fpn_1x_coco(), "runs/detection/mask_rcnn_r50_fpn_1x_coco")


def mask_rcnn_r50_fpn_3x_coco() -> DetConfig:
    """detectron2's mask_rcnn_R_50_FPN_3x (box AP 41.0, mask AP 37.2): 270k iterations."""
    return _with_masks(faster_rcnn_r50_fpn_3x_coco(), "runs/detection/mask_rcnn_r50_fpn_3x_coco")


def maskrcnn_resnet50_fpn_torchvision() -> DetConfig:
    """torchvision's ``maskrcnn_resnet50_fpn`` exactly (its state_dicts load; box AP 37.9, mask
    AP 34.6 as torchvision reports them) with the reference recipe of its Faster R-CNN."""
    return _with_masks(
        fasterrcnn_resnet50_fpn_torchvision(), "runs/detection/maskrcnn_resnet50_fpn_torchvision"
    )


def maskrcnn_resnet50_fpn_v2_torchvision() -> DetConfig:
    """torchvision's ``maskrcnn_resnet50_fpn_v2`` (v1 plus batch norm in the FPN, the 4-conv
    box head and the mask head, a 2-conv RPN head; box AP 47.4, mask AP 41.8 as torchvision
    reports them after its longer recipe); same schedule as v1 here."""
    return _with_masks(
        fasterrcnn_resnet50_fpn_v2_torchvision(),
        "runs/detection/maskrcnn_resnet50_fpn_v2_torchvision",
    )


def mask_rcnn_r18_fpn_synthetic() -> DetConfig:
    """faster_rcnn_r18_fpn_synthetic with a light mask branch (two 64-channel convolutions),
    trained from scratch on the synthetic shapes and their exact masks: the CPU demo."""
    cfg = _with_masks(faster_rcnn_r18_fpn_synthetic(), "runs/detection/mask_rcnn_r18_fpn_synthetic")
    mask = MaskHeadConfig(enabled=True, conv_channels=(64, 64), predictor_channels=64)
    return replace(cfg, model=replace(cfg.model, mask=mask))


PRESETS = {
    f.__name__: f
    for f in (
        faster_rcnn_r18_fpn_synthetic,
        faster_rcnn_r50_fpn_1x_coco,
        faster_rcnn_r50_fpn_3x_coco,
        fasterrcnn_resnet50_fpn_torchvision,
        fasterrcnn_resnet50_fpn_v2_torchvision,
        mask_rcnn_r18_fpn_synthetic,
        mask_rcnn_r50_fpn_1x_coco,
        mask_rcnn_r50_fpn_3x_coco,
        maskrcnn_resnet50_fpn_torchvision,
        maskrcnn_resnet50_fpn_v2_torchvision,
    )
}
