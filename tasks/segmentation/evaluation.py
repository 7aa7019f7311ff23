"""Segmentation metrics: one confusion matrix over the whole dataset, the metrics derived from
it, the per-class report, and the evaluator the training engine feeds.

Conventions (MMSegmentation's): IoU = TP / (TP + FP + FN); a class absent from both the ground
truth and the prediction has no IoU and is left out of the means (NaN, not 0); pixel accuracy
(aAcc) = sum TP / labeled pixels; per-class accuracy = TP / ground-truth pixels (recall); Dice =
2 TP / (pred + gt) (= F1). Ignored pixels are left out of everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resvision.tasks.engine import distributed as D
from resvision.tasks.engine.plots import save_figure
from resvision.tasks.engine.table import format_table
from resvision.tasks.engine.task import Evaluator


class ConfusionMatrix:
    """``matrix[gt, pred]`` pixel counts, accumulated with bincount on the data's device."""

    def __init__(
        self, num_classes: int, ignore_index: int = 255, device: torch.device | str = "cpu"
    ) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """``pred``, ``target``: integer maps of the same shape (any batch layout)."""
        if pred.shape != target.shape:
            raise ValueError(
                f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape"
            )
        target = target.to(self.matrix.device).reshape(-1).long()
        pred = pred.to(self.matrix.device).reshape(-1).long()
        valid = target != self.ignore_index
        k = self.num_classes
        self.matrix += torch.bincount(target[valid] * k + pred[valid], minlength=k * k).reshape(
            k, k
        )

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the matrices of all DDP ranks (in place)."""
        D.all_reduce_sum_(self.matrix)
        return self

    def compute(self) -> dict[str, np.ndarray | float]:
        return metrics_from_confusion(self.matrix.cpu().numpy())


def metrics_from_confusion(cm: np.ndarray) -> dict:
    cm = cm.astype(np.float64)
    tp = np.diag(cm)
    gt = cm.sum(1)
    pred = cm.sum(0)
    union = gt + pred - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
        dice = np.where(gt + pred > 0, 2 * tp / (gt + pred), np.nan)
        precision = np.where(pred > 0, tp / pred, np.nan)
    total = gt.sum()
    return {
        "aAcc": float(tp.sum() / total) if total else float("nan"),
        "mIoU": _nanmean(iou),
        "mAcc": _nanmean(acc),
        "mDice": _nanmean(dice),
        "IoU": iou,
        "Acc": acc,
        "Dice": dice,
        "Precision": precision,
        "Recall": acc,
    }


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def per_class_table(metrics: dict, class_names: tuple[str, ...]) -> str:
    rows = []
    for i, name in enumerate(class_names):
        cells = [metrics[k][i] for k in ("IoU", "Acc", "Dice", "Precision")]
        rows.append([name] + ["-" if np.isnan(v) else round(100 * float(v), 2) for v in cells])
    rows.append(["mean"] + [round(100 * metrics[k], 2) for k in ("mIoU", "mAcc", "mDice")] + ["-"])
    table = format_table(("class", "IoU", "Acc", "Dice", "Precision"), rows, floatfmt=".2f")
    means = "  ".join(f"{k} {100 * metrics[k]:.2f}" for k in ("aAcc", "mIoU", "mAcc"))
    return f"{table}\n\n{means}"


def save_confusion_png(cm: np.ndarray, class_names: tuple[str, ...], path: str | Path) -> Path:
    """Row-normalised confusion matrix (rows: ground truth) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, np.float64)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * k + 2), max(4, 0.45 * k + 1.5)))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(k), class_names, fontsize=7)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    if k <= 25:
        for i in range(k):
            for j in range(k):
                if norm[i, j] >= 0.01:
                    ax.text(
                        j,
                        i,
                        f"{norm[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


class SegmentationEvaluator(Evaluator):
    """mIoU, aAcc, mAcc, mDice and per-class IoU from one confusion matrix summed over ranks.

    ``process(batch, predictions)`` takes the batch's ``targets`` and one ``(H, W)`` label map
    per image; :meth:`write_report` writes ``per_class.md`` and ``confusion.png``.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        *,
        ignore_index: int = 255,
        device: torch.device | str = "cpu",
    ) -> None:
        self.class_names = tuple(class_names)
        self.ignore_index = ignore_index
        self.device = torch.device(device)
        self.last_confusion: np.ndarray | None = None
        self.reset()

    def reset(self) -> None:
        self.matrix = ConfusionMatrix(len(self.class_names), self.ignore_index, self.device)

    def process(self, batch: dict[str, Any], predictions: Sequence[torch.Tensor]) -> None:
        for pred, target in zip(predictions, batch["targets"]):
            self.matrix.update(pred, target)

    def evaluate(self) -> dict[str, float]:
        self.matrix.all_reduce()
        self.last_confusion = self.matrix.matrix.cpu().numpy()
        metrics = metrics_from_confusion(self.last_confusion)
        out = {k: metrics[k] for k in ("mIoU", "aAcc", "mAcc", "mDice")}
        for name, iou in zip(self.class_names, metrics["IoU"]):
            if not np.isnan(iou):
                out[f"IoU/{name}"] = float(iou)
        return out

    def write_report(self, folder: Path) -> str | None:
        if self.last_confusion is None:
            return None
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        table = per_class_table(metrics_from_confusion(self.last_confusion), self.class_names)
        (folder / "per_class.md").write_text(table + "\n")
        save_confusion_png(self.last_confusion, self.class_names, folder / "confusion.png")
        return table
