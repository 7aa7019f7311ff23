"""InsightFace's verification loop as its ``eval/verification.py`` is written: one Python
iteration per threshold and fold. The parity test compares the vectorized protocol with it,
and ``resvision benchmark face`` times it as the baseline."""

from __future__ import annotations

import numpy as np

from resvision.tasks.face.evaluation import _val_far, interp_threshold, kfold


def _accuracy_loop(
    threshold: float, dist: np.ndarray, issame: np.ndarray
) -> tuple[float, float, float]:
    predict = np.less(dist, threshold)
    tp = np.sum(np.logical_and(predict, issame))
    fp = np.sum(np.logical_and(predict, np.logical_not(issame)))
    tn = np.sum(np.logical_and(np.logical_not(predict), np.logical_not(issame)))
    fn = np.sum(np.logical_and(np.logical_not(predict), issame))
    tpr = 0 if (tp + fn == 0) else float(tp) / float(tp + fn)
    fpr = 0 if (fp + tn == 0) else float(fp) / float(fp + tn)
    return tpr, fpr, float(tp + tn) / dist.size


def reference_evaluate(
    embeddings: np.ndarray, issame: np.ndarray, folds: int = 10
) -> dict[str, float]:
    """The protocol with one Python iteration per threshold and fold (InsightFace's structure)."""
    issame = np.asarray(issame, bool)
    e1, e2 = embeddings[0::2], embeddings[1::2]
    dist = np.sum(np.square(np.subtract(e1, e2)), 1)
    thresholds = np.arange(0, 4, 0.01)
    accuracy = np.zeros(folds)
    for k, (train, test) in enumerate(kfold(len(issame), folds)):
        acc_train = np.zeros(len(thresholds))
        for t, threshold in enumerate(thresholds):
            _, _, acc_train[t] = _accuracy_loop(threshold, dist[train], issame[train])
        best = np.argmax(acc_train)
        for threshold in thresholds:  # the per-threshold test-fold rates (tpr, fpr) as InsightFace
            _accuracy_loop(threshold, dist[test], issame[test])
        _, _, accuracy[k] = _accuracy_loop(thresholds[best], dist[test], issame[test])
    thresholds = np.arange(0, 4, 0.001)
    val, far = np.zeros(folds), np.zeros(folds)
    for k, (train, test) in enumerate(kfold(len(issame), folds)):
        far_train = np.zeros(len(thresholds))
        for t, threshold in enumerate(thresholds):
            _, far_train[t] = _val_far(threshold, dist[train], issame[train])
        if np.max(far_train) >= 1e-3:
            threshold = interp_threshold(far_train, thresholds, 1e-3)
        else:
            threshold = 0.0
        val[k], far[k] = _val_far(threshold, dist[test], issame[test])
    return {
        "acc": float(accuracy.mean()),
        "acc_std": float(accuracy.std()),
        "val@far1e-3": float(val.mean()),
        "val_std": float(val.std()),
        "far": float(far.mean()),
    }
