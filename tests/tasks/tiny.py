"""The tiny configuration of every task: a model and data small enough for seconds on a CPU
(the task contract and the command tests train these)."""

from __future__ import annotations

COMMON = ["runtime.tensorboard=false", "runtime.progress=false", "runtime.checkpoint_period=2"]
# task -> (preset, overrides): a model and data small enough for seconds on a CPU
TINY = {
    "segmentation": (
        "unet_r18_synthetic",
        [
            "data.synthetic_train=8",
            "data.synthetic_val=2",
            "data.batch_size=4",
            "data.synthetic_size=64",
            "data.crop_size=[64,64]",
            "model.unet_channels=[32,24,16,12,8]",
        ],
    ),
    "detection": (
        "faster_rcnn_r18_fpn_synthetic",
        [
            "data.synthetic_train=8",
            "data.synthetic_val=2",
            "data.batch_size=2",
            "data.train_sizes=[96]",
            "data.max_size=128",
            "model.test.min_size=96",
            "model.test.max_size=128",
            "model.fpn_channels=32",
        ],
    ),
    "face": (
        "iresnet18_synthetic",
        [
            "data.synthetic_identities=8",
            "data.synthetic_images=2",
            "data.synthetic_val_identities=4",
            "data.synthetic_val_pairs=20",
            "data.batch_size=4",
            "model.embedding_size=32",
        ],
    ),
    "face-detection": (
        "retinaface_r18_synthetic",
        [
            "data.synthetic_train=8",
            "data.synthetic_val=2",
            "data.batch_size=2",
            "data.image_size=64",
            "data.synthetic_min_side=64",
            "data.synthetic_max_side=80",
            "model.fpn_channels=16",
            "model.test.pre_nms_top_k=300",
            "model.test.max_detections=50",
        ],
    ),
}
