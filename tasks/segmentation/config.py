"""Segmentation configs and presets (MMSegmentation, torchvision and smp recipes, CPU demos)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar, Literal

# the model section is the heads' own config (one SegModelConfig), named here for the presets
from resvision.heads.segmentation.config import SegModelConfig
from resvision.tasks.engine.config import OptimConfig, RuntimeConfig, ScheduleConfig


@dataclass
class SegLossConfig:
    """Weights of the loss terms (0 = off)."""

    ce: float = 1.0
    dice: float = 0.0
    focal: float = 0.0
    lovasz: float = 0.0
    class_weights: tuple[float, ...] | None = None  # cross-entropy class weights


@dataclass
class InferenceConfig:
    """How a segmentation model is run at test time."""

    mode: Literal["whole", "slide"] = "whole"
    crop_size: tuple[int, int] = (512, 512)  # sliding window (height, width)
    stride: tuple[int, int] = (341, 341)  # sliding window step (height, width)
    window_batch: int = 4  # windows per forward pass
    test_size: tuple[int, int] | None = None  # fit images inside (long, short) first; None: as is
    scales: tuple[float, ...] = (1.0,)  # TTA scales (relative to test_size)
    flip: bool = False  # TTA horizontal flip
    cpu_accumulate_pixels: int = 4096 * 4096  # larger images accumulate window sums on the CPU
    max_whole_pixels: int = 4096 * 3072  # larger images are run as sliding windows; 0: never


@dataclass
class SegDataConfig:
    source: Literal["synthetic", "voc", "cityscapes", "ade20k", "folder"] = "synthetic"
    root: str = ""  # voc / cityscapes / ade20k root folder
    train_split: str = "train"
    val_split: str = "val"
    train_images: str = ""  # folder source: images and masks (same file stem, .png masks)
    train_masks: str = ""
    val_images: str = ""
    val_masks: str = ""
    class_names: str = ""  # a file with one class name per line (folder source; optional for voc)
    ignore_index: int = 255
    reduce_zero_label: bool = False  # ADE20K-style masks: 0 = unlabeled -> ignore, k -> k - 1
    crop_size: tuple[int, int] = (512, 512)
    scale: tuple[int, int] | None = (2048, 512)  # fit (long, short) before the random ratio
    ratio_range: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    photometric: bool = True
    batch_size: int = 8  # per process
    eval_batch_size: int = 1
    num_workers: int = 4
    synthetic_train: int = 256  # synthetic source: number of images, their size and seed
    synthetic_val: int = 48
    synthetic_size: int = 128
    synthetic_seed: int = 0


@dataclass
class SegConfig:
    model: SegModelConfig = field(default_factory=SegModelConfig)
    data: SegDataConfig = field(default_factory=SegDataConfig)
    loss: SegLossConfig = field(default_factory=SegLossConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    renamed_keys: ClassVar[dict[str, str]] = {"model.sync_bn": "runtime.sync_bn"}


def _mmseg_schedule(iterations: int) -> ScheduleConfig:
    # MMSegmentation: PolyLR power 0.9, eta_min 1e-4 (of lr 0.01), by iteration, no warmup
    return ScheduleConfig(
        iterations=iterations, policy="poly", power=0.9, min_lr_ratio=0.01, warmup_iterations=0
    )


def _mmseg_optim(batch: int) -> OptimConfig:
    return OptimConfig(
        name="sgd",
        lr=0.01,
        momentum=0.9,
        weight_decay=5e-4,
        reference_batch_size=batch,
        decay_norm_and_bias=True,
    )


def deeplabv3_r50_d8_cityscapes_512x1024() -> SegConfig:
    """MMSegmentation's deeplabv3_r50-d8_4xb2-40k_cityscapes-512x1024 (79.09 mIoU).

    ResNet-50 with the deep stem (resvision's resnet50d; mmseg uses V1c, which has the same stem
    without the average-pool shortcut), output stride 8, ASPP 512 channels, FCN auxiliary head on
    c4 (weight 0.4), SyncBN, SGD 0.01 / poly 0.9 / 40k iterations, 8 images of 512x1024 per step.
    """
    return SegConfig(
        model=SegModelConfig(
            backbone="resnet50d",
            output_stride=8,
            arch="deeplabv3",
            num_classes=19,
            decoder_channels=512,
            aspp_dropout=0.1,
            aux_weight=0.4,
        ),
        data=SegDataConfig(
            source="cityscapes",
            root="data/cityscapes",
            crop_size=(512, 1024),
            scale=(2048, 1024),
            batch_size=2,
        ),
        inference=InferenceConfig(mode="whole", test_size=(2048, 1024)),
        optim=_mmseg_optim(8),
        schedule=_mmseg_schedule(40000),
        runtime=RuntimeConfig(
            output_dir="runs/segmentation/deeplabv3_r50_d8_cityscapes_512x1024",
            checkpoint_period=4000,
            eval_period=4000,
            log_period=50,
            amp="off",
            sync_bn=True,
        ),
    )


def deeplabv3plus_r50_d8_voc_512x512() -> SegConfig:
    """MMSegmentation's deeplabv3plus_r50-d8_4xb4-20k_voc12aug-512x512 (75.93 mIoU).

    Deep-stem ResNet-50 at output stride 8, separable ASPP (12, 24, 36) with 512 channels, the
    c2 skip at 48 channels, FCN auxiliary head (0.4), SGD 0.01 / poly / 20k iterations, 16 images
    of 512x512 per step, images fitted in 2048x512 then scaled 0.5-2.0.
    """
    return SegConfig(
        model=SegModelConfig(
            backbone="resnet50d",
            output_stride=8,
            arch="deeplabv3plus",
            num_classes=21,
            decoder_channels=512,
            aspp_separable=True,
            aspp_dropout=0.1,
            aux_weight=0.4,
        ),
        data=SegDataConfig(
            source="voc",
            root="data/VOCdevkit/VOC2012",
            crop_size=(512, 512),
            scale=(2048, 512),
            batch_size=4,
        ),
        inference=InferenceConfig(mode="whole", test_size=(2048, 512)),
        optim=_mmseg_optim(16),
        schedule=_mmseg_schedule(20000),
        runtime=RuntimeConfig(
            output_dir="runs/segmentation/deeplabv3plus_r50_d8_voc_512x512",
            checkpoint_period=2000,
            eval_period=2000,
            log_period=50,
            sync_bn=True,
        ),
    )


def unet_r34_512x512() -> SegConfig:
    """U-Net on ResNet-34 for your own image + mask folders (segmentation-models-pytorch's
    ``Unet("resnet34")`` architecture, so its state_dicts load); AdamW 1e-4, cosine, CE + Dice."""
    return SegConfig(
        model=SegModelConfig(
            backbone="resnet34",
            weights="torchvision:IMAGENET1K_V1",
            arch="unet",
            num_classes=0,
            head_kernel=3,
        ),
        data=SegDataConfig(
            source="folder", crop_size=(512, 512), scale=None, ratio_range=(0.5, 2.0), batch_size=8
        ),
        loss=SegLossConfig(ce=1.0, dice=0.5),
        optim=OptimConfig(name="adamw", lr=1e-4, weight_decay=1e-4, reference_batch_size=8),
        schedule=ScheduleConfig(
            iterations=20000, policy="cosine", warmup_iterations=500, warmup_factor=0.01
        ),
        runtime=RuntimeConfig(
            output_dir="runs/segmentation/unet_r34_512x512",
            checkpoint_period=1000,
            eval_period=2000,
            log_period=50,
        ),
    )


def deeplabv3_resnet50_torchvision() -> SegConfig:
    """torchvision's ``deeplabv3_resnet50`` exactly (its state_dicts load), with its reference
    recipe: SGD 0.02 / poly 0.9, 32 images of 480x480 per step, auxiliary loss 0.5."""
    return SegConfig(
        model=SegModelConfig(
            backbone="resnet50",
            weights="torchvision:IMAGENET1K_V1",
            output_stride=8,
            arch="deeplabv3",
            num_classes=21,
            decoder_channels=256,
            aspp_dropout=0.5,
            aux_weight=0.5,
            aux_channels=256,
        ),
        data=SegDataConfig(
            source="voc",
            root="data/VOCdevkit/VOC2012",
            crop_size=(480, 480),
            scale=(520, 520),
            ratio_range=(0.5, 2.0),
            photometric=False,
            batch_size=4,
        ),
        optim=OptimConfig(
            name="sgd", lr=0.02, momentum=0.9, weight_decay=1e-4, reference_batch_size=32
        ),
        schedule=ScheduleConfig(iterations=30000, policy="poly", power=0.9, warmup_iterations=0),
        runtime=RuntimeConfig(
            output_dir="runs/segmentation/deeplabv3_resnet50_torchvision",
            checkpoint_period=2000,
            eval_period=2000,
        ),
    )


def deeplabv3plus_r50_smp() -> SegConfig:
    """segmentation-models-pytorch's ``DeepLabV3Plus("resnet50")`` defaults (its state_dicts load):
    output stride 16 with every conv of the last stage dilated, separable ASPP, dropout 0.5."""
    cfg = deeplabv3plus_r50_d8_voc_512x512()
    return replace(
        cfg,
        model=SegModelConfig(
            backbone="resnet50",
            output_stride=16,
            arch="deeplabv3plus",
            num_classes=21,
            decoder_channels=256,
            aspp_separable=True,
            aspp_dropout=0.5,
            align_corners=True,
            dilation="uniform",
        ),
        runtime=replace(cfg.runtime, output_dir="runs/segmentation/deeplabv3plus_r50_smp"),
    )


def _synthetic(arch: str, backbone: str, output_stride: int | None, name: str) -> SegConfig:
    return SegConfig(
        model=SegModelConfig(
            backbone=backbone,
            output_stride=output_stride,
            arch=arch,
            num_classes=0,
            unet_channels=(64, 48, 32, 24, 16),
            decoder_channels=128,
        ),
        data=SegDataConfig(
            source="synthetic",
            synthetic_size=96,
            crop_size=(96, 96),
            scale=None,
            ratio_range=(0.75, 1.5),
            batch_size=8,
            num_workers=0,
        ),
        loss=SegLossConfig(ce=1.0, dice=0.5),
        optim=OptimConfig(name="adamw", lr=2e-3, weight_decay=1e-4, reference_batch_size=8),
        schedule=ScheduleConfig(
            iterations=240, policy="cosine", warmup_iterations=30, warmup_factor=0.01
        ),
        runtime=RuntimeConfig(
            output_dir=f"runs/segmentation/{name}",
            checkpoint_period=80,
            eval_period=80,
            log_period=40,
        ),
    )


def unet_r18_synthetic() -> SegConfig:
    """A small U-Net trained from scratch on the built-in synthetic shapes (CPU, minutes)."""
    return _synthetic("unet", "resnet18", None, "unet_r18_synthetic")


def deeplabv3plus_r18_synthetic() -> SegConfig:
    """DeepLabV3+ on ResNet-18 at output stride 16, from scratch on the synthetic shapes."""
    return _synthetic("deeplabv3plus", "resnet18", 16, "deeplabv3plus_r18_synthetic")


PRESETS = {
    f.__name__: f
    for f in (
        unet_r18_synthetic,
        deeplabv3plus_r18_synthetic,
        deeplabv3_r50_d8_cityscapes_512x1024,
        deeplabv3plus_r50_d8_voc_512x512,
        unet_r34_512x512,
        deeplabv3_resnet50_torchvision,
        deeplabv3plus_r50_smp,
    )
}
