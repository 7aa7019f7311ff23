"""Every loss honours ignore_index; metrics match a plain numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resvision.tasks.segmentation.evaluation import ConfusionMatrix, per_class_table
from resvision.tasks.segmentation.losses import SegLossConfig, SegmentationLoss

IGNORE = 255


@pytest.mark.parametrize("term", ["ce", "dice", "focal", "lovasz", "ce_weighted"])
def test_ignored_pixels_change_neither_loss_nor_gradient(term):
    weights = {"ce": 0.0, "dice": 0.0, "focal": 0.0, "lovasz": 0.0}
    weights[term.split("_")[0]] = 1.0
    cfg = SegLossConfig(
        **weights, class_weights=(1.0, 2.0, 0.5, 3.0) if term == "ce_weighted" else None
    )
    loss_fn = SegmentationLoss(cfg, num_classes=4, ignore_index=IGNORE)
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (2, 12, 10), generator=g)
    ignored = torch.rand(2, 12, 10, generator=g) < 0.3
    target[ignored] = IGNORE
    base = torch.randn(2, 4, 12, 10, generator=g)
    changed = base.clone()
    changed[ignored.unsqueeze(1).expand_as(changed)] = (
        torch.randn(int(ignored.sum()) * 4, generator=g) * 10
    )

    def run(logits):
        logits = logits.clone().requires_grad_(True)
        value = sum(loss_fn(logits, target).values())
        value.backward()
        return value.detach(), logits.grad

    v1, g1 = run(base)
    v2, g2 = run(changed)
    # float32's tight default tolerance holds on any CPU: both runs are the same operations on
    # the same shapes, only the ignored entries (masked out) differ
    torch.testing.assert_close(v1, v2)
    torch.testing.assert_close(
        g1[~ignored.unsqueeze(1).expand_as(g1)], g2[~ignored.unsqueeze(1).expand_as(g2)]
    )
    assert g1[ignored.unsqueeze(1).expand_as(g1)].abs().max() == 0
    assert torch.isfinite(v1) and v1 > 0


def test_cross_entropy_matches_torch_and_survives_all_ignored():
    """The mean over the non-ignored pixels, summed in another order than torch's: compared
    with torch's in float64 (the loss itself runs in float32, 7e-8 from it here), the bound
    keeps 100x of headroom; averaging over every pixel, the ignored row included, is off by
    20%."""
    loss_fn = SegmentationLoss(SegLossConfig(), num_classes=3)
    logits = torch.randn(1, 3, 5, 5)
    target = torch.randint(0, 3, (1, 5, 5))
    target[0, 0] = IGNORE
    ref = torch.nn.functional.cross_entropy(logits.double(), target, ignore_index=IGNORE)
    got = loss_fn(logits, target)["loss_ce"]
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=0)
    all_ignored = torch.full((1, 5, 5), IGNORE)
    assert loss_fn(logits, all_ignored)["loss_ce"].item() == 0.0


def _numpy_reference(preds, targets, num_classes):
    """Per-class IoU/Acc the long way: loop over classes, count pixels."""
    iou, acc = [], []
    correct = labeled = 0
    for c in range(num_classes):
        inter = union = gt = 0
        for p, t in zip(preds, targets):
            valid = t != IGNORE
            inter += np.sum((p == c) & (t == c) & valid)
            union += np.sum(((p == c) | (t == c)) & valid)
            gt += np.sum((t == c) & valid)
        iou.append(inter / union if union else None)
        acc.append(inter / gt if gt else None)
    for p, t in zip(preds, targets):
        valid = t != IGNORE
        correct += np.sum((p == t) & valid)
        labeled += valid.sum()
    present = [v for v in iou if v is not None]
    return {"iou": iou, "acc": acc, "mIoU": sum(present) / len(present), "aAcc": correct / labeled}


def test_metrics_match_numpy_reference_with_ignored_and_absent_classes():
    rng = np.random.default_rng(0)
    k = 6  # class 4 never appears anywhere; class 5 is only predicted (a false positive)
    preds, targets = [], []
    cm = ConfusionMatrix(k, IGNORE)
    for shape in [(7, 9), (12, 5), (3, 3)]:
        t = rng.choice([0, 1, 2, 3], size=shape)
        t[rng.random(shape) < 0.2] = IGNORE
        p = np.where(rng.random(shape) < 0.7, t, rng.choice([0, 1, 2, 3, 5], size=shape))
        p[p == IGNORE] = 0
        preds.append(p)
        targets.append(t)
        cm.update(torch.from_numpy(p), torch.from_numpy(t))
    got = cm.compute()
    ref = _numpy_reference(preds, targets, k)
    assert np.isnan(got["IoU"][4])  # absent from both: excluded (not 0)
    assert got["IoU"][5] == 0  # predicted but never true: counts as 0
    for c in range(k):
        if ref["iou"][c] is None:
            assert np.isnan(got["IoU"][c])
        else:
            assert got["IoU"][c] == pytest.approx(ref["iou"][c])
        if ref["acc"][c] is not None:
            assert got["Acc"][c] == pytest.approx(ref["acc"][c])
    assert got["mIoU"] == pytest.approx(ref["mIoU"])
    assert got["aAcc"] == pytest.approx(ref["aAcc"])
    table = per_class_table(got, tuple(f"c{i}" for i in range(k)))
    assert "| c4 " in table and "mIoU" in table
