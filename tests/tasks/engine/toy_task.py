"""A tiny test-only task: classify synthetic 32 px images with a resnet18 trunk.

It exercises the engine without any real task: seeded augmentation (random flip and colour
jitter keyed by the sample seed), a model that returns a loss dict in train mode and logits in
eval mode, evaluation gathered across ranks. Run it like the real command line:

    python tests/tasks/engine/toy_task.py train toy --set schedule.iterations=10
    torchrun --nproc-per-node 2 tests/tasks/engine/toy_task.py train toy ...
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from resvision.backbones import create_backbone
from resvision.tasks.engine import distributed as D
from resvision.tasks.engine.config import OptimConfig, RuntimeConfig, ScheduleConfig
from resvision.tasks.engine.task import EvalContext, Evaluator, Task

NUM_CLASSES = 4


@dataclass
class ToyModelConfig:
    backbone: str = "resnet18"
    norm: str = "bn"
    nan_from_call: int = -1  # training forward calls from this one on return a NaN loss (tests)
    nan_calls: int = 1_000_000  # ... for this many calls
    dropout: float = 0.1
    drop_path_rate: float = 0.0


@dataclass
class ToyDataConfig:
    source: str = "synthetic"
    num_train: int = 64
    num_val: int = 32
    size: int = 32
    batch_size: int = 8
    num_workers: int = 0


@dataclass
class ToyConfig:
    model: ToyModelConfig = field(default_factory=ToyModelConfig)
    data: ToyDataConfig = field(default_factory=ToyDataConfig)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=0.05, reference_batch_size=8, weight_decay=1e-4)
    )
    schedule: ScheduleConfig = field(
        default_factory=lambda: ScheduleConfig(iterations=20, steps=(15,), warmup_iterations=2)
    )
    runtime: RuntimeConfig = field(
        default_factory=lambda: RuntimeConfig(
            checkpoint_period=5, log_period=1, progress=False, tensorboard=True
        )
    )


class ToyDataset(Dataset):
    """Class k: a bright square in quadrant k on a noisy background."""

    def __init__(self, num: int, size: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.labels = rng.integers(0, NUM_CLASSES, num)
        self.images = rng.uniform(0, 0.3, (num, 3, size, size)).astype(np.float32)
        h = size // 2
        for i, k in enumerate(self.labels):
            y, x = divmod(int(k), 2)
            self.images[i, :, y * h + 2 : y * h + h - 2, x * h + 2 : x * h + h - 2] += 0.7

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        image = torch.from_numpy(self.images[index].copy())
        if seed is not None:  # seeded augmentation: brightness jitter and noise
            rng = np.random.default_rng(seed)
            image = image * float(rng.uniform(0.8, 1.2)) + torch.from_numpy(
                rng.normal(0, 0.02, image.shape).astype(np.float32)
            )
        return image, int(self.labels[index])


class ToyModel(nn.Module):
    def __init__(self, cfg: ToyModelConfig) -> None:
        super().__init__()
        self.backbone = create_backbone(
            cfg.backbone, out_levels=("c5",), norm=cfg.norm, drop_path_rate=cfg.drop_path_rate
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(self.backbone.feature_specs[-1].channels, NUM_CLASSES)
        self.cfg = cfg
        self.calls = 0

    def forward(self, images, targets=None):
        logits = self.fc(self.dropout(self.backbone(images)["c5"].mean((2, 3))))
        if not self.training:
            return logits
        self.calls += 1
        loss = F.cross_entropy(logits.float(), targets)
        c = self.cfg
        if (
            c.nan_from_call >= 0
            and c.nan_from_call <= self.calls - 1 < c.nan_from_call + c.nan_calls
        ):
            loss = loss * float("nan")
        return {"loss_cls": loss, "loss_l2": 1e-3 * logits.float().square().mean()}


class AccuracyEvaluator(Evaluator):
    """Top-1 accuracy, counted on every rank and summed."""

    def reset(self):
        self.correct = self.total = 0

    def process(self, batch, logits):
        self.correct += int((logits.argmax(1) == batch["targets"]).sum())
        self.total += len(batch["targets"])

    def evaluate(self):
        parts = D.gather_objects((self.correct, self.total))
        return {
            "accuracy": sum(c for c, _ in parts) / max(sum(t for _, t in parts), 1),
            "count": float(sum(t for _, t in parts)),
        }


class ToyTask(Task):
    name = "toy"
    config_class = ToyConfig
    main_metric = "accuracy"
    default_preset = "toy"

    def presets(self):
        return {"toy": ToyConfig}

    def build_model(self, cfg):
        return ToyModel(cfg.model)

    def build_train_set(self, cfg):
        return ToyDataset(cfg.data.num_train, cfg.data.size, 1)

    def build_val_set(self, cfg):
        return ToyDataset(cfg.data.num_val, cfg.data.size, 2)

    def collate(self, items):
        images, labels = zip(*items)
        return {"images": torch.stack(images), "targets": torch.tensor(labels)}

    def build_evaluator(self, cfg, dataset):
        return AccuracyEvaluator()

    def predict_batch(self, model, batch, ctx: EvalContext):
        with ctx.autocast():
            return model(batch["images"])

    def checkpoint_meta(self, cfg, train_set):
        return {"class_names": [f"quadrant{i}" for i in range(NUM_CLASSES)]}


if __name__ == "__main__":
    from resvision.tools.cli import main

    sys.exit(main(sys.argv[1:], tasks={"toy": ToyTask()}))
