"""Face verification exactly as InsightFace's ``eval/verification.py`` computes it, vectorized,
and the evaluator the training engine feeds.

Embeddings (original + flipped, summed, then L2-normalized) of pair ``k`` are rows ``2k`` and
``2k+1``; the distance is the squared L2 distance. Accuracy: 10 folds without shuffling (sklearn
KFold order), thresholds ``0..4`` step 0.01, the best training-fold threshold applied to the test
fold. VAL@FAR=1e-3: thresholds step 0.001, per fold the threshold where the training FAR reaches
the target (linear interpolation of threshold against training FAR, 0 when the FAR never
reaches the target). Every threshold is scored at once by counting in sorted distances instead
of a Python loop; the numbers are identical to the loop's.

InsightFace calls ``scipy.interpolate.interp1d(far, thresholds, kind="slinear")`` there, which
recent SciPy refuses whenever two thresholds share a FAR (they nearly always do: every threshold
below the closest negative pair has FAR 0), raising "Expect x to not have duplicates"
(insightface#2152). :func:`interp_threshold` computes the same piecewise-linear interpolation on
the bracketing interval, with repeated FAR values allowed.

Beyond the protocol: ROC AUC, TAR at FAR 1e-1..1e-4 over all pairs, and the threshold that
gives a target FAR in cosine and squared-L2 units (``d = 2 - 2 cos`` for unit vectors).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from resvision.datasets.face import VerificationSuite
from resvision.tasks.engine import distributed as D
from resvision.tasks.engine.task import Evaluator

from .visualize import save_roc_png

FARS = (1e-1, 1e-2, 1e-3, 1e-4)


def kfold(n: int, folds: int = 10) -> list[tuple[np.ndarray, np.ndarray]]:
    """sklearn ``KFold(n_splits=folds, shuffle=False)``: contiguous folds, the first
    ``n % folds`` one item longer."""
    indices = np.arange(n)
    tests = np.array_split(indices, folds)
    return [(np.setdiff1d(indices, t, assume_unique=True), t) for t in tests]


def _counts(dist: np.ndarray, issame: np.ndarray, thresholds: np.ndarray):
    """tp, fp, tn, fn for every threshold (``dist < threshold`` predicts "same").

    Counting by binary search in the sorted distances of same and different pairs gives the
    exact integers of the per-threshold comparison, in O((n + T) log n).
    """
    same = np.sort(dist[issame])
    diff = np.sort(dist[~issame])
    tp = np.searchsorted(same, thresholds, side="left")  # same pairs with dist < threshold
    fp = np.searchsorted(diff, thresholds, side="left")
    return tp, fp, len(diff) - fp, len(same) - tp


def _rates(tp, fp, tn, fn, n):
    with np.errstate(divide="ignore", invalid="ignore"):
        tpr = np.where(tp + fn == 0, 0.0, tp / np.maximum(tp + fn, 1))
        fpr = np.where(fp + tn == 0, 0.0, fp / np.maximum(fp + tn, 1))
    return tpr, fpr, (tp + tn) / n


def calculate_roc(thresholds: np.ndarray, dist: np.ndarray, issame: np.ndarray, folds: int = 10):
    """Mean TPR/FPR per threshold over test folds, and accuracy per fold."""
    tprs = np.zeros((folds, len(thresholds)))
    fprs = np.zeros((folds, len(thresholds)))
    accuracy = np.zeros(folds)
    for k, (train, test) in enumerate(kfold(len(issame), folds)):
        _, _, acc_train = _rates(*_counts(dist[train], issame[train], thresholds), len(train))
        best = int(np.argmax(acc_train))
        tprs[k], fprs[k], acc_test = _rates(
            *_counts(dist[test], issame[test], thresholds), len(test)
        )
        accuracy[k] = acc_test[best]
    return tprs.mean(0), fprs.mean(0), accuracy


def _val_far(threshold: float, dist: np.ndarray, issame: np.ndarray) -> tuple[float, float]:
    """VAL and FAR at ``threshold`` (0 where a fold has no same / no different pair, where
    InsightFace's code divides by zero)."""
    pred = dist < threshold
    n_same, n_diff = float(issame.sum()), float((~issame).sum())
    val = float((pred & issame).sum()) / n_same if n_same else 0.0
    return val, (float((pred & ~issame).sum()) / n_diff if n_diff else 0.0)


def interp_threshold(far: np.ndarray, thresholds: np.ndarray, target: float) -> float:
    """The threshold at which the (non-decreasing) FAR curve reaches ``target``, by linear
    interpolation between the last threshold below the target and the first at or above it."""
    order = np.argsort(far, kind="mergesort")
    x, y = far[order], thresholds[order]
    hi = int(np.clip(np.searchsorted(x, target, side="left"), 1, len(x) - 1))
    lo = hi - 1
    if x[hi] == x[lo]:
        return float(y[hi])
    return float(y[lo] + (target - x[lo]) * (y[hi] - y[lo]) / (x[hi] - x[lo]))


def calculate_val(
    thresholds: np.ndarray, dist: np.ndarray, issame: np.ndarray, far_target: float, folds: int = 10
):
    """VAL (TAR) at ``far_target``: mean, std and the achieved FAR, over folds."""
    val = np.zeros(folds)
    far = np.zeros(folds)
    for k, (train, test) in enumerate(kfold(len(issame), folds)):
        _, fp, tn, _ = _counts(dist[train], issame[train], thresholds)
        far_train = fp / float(fp[0] + tn[0])
        if far_train.max() >= far_target:
            threshold = interp_threshold(far_train, thresholds, far_target)
        else:
            threshold = 0.0
        val[k], far[k] = _val_far(threshold, dist[test], issame[test])
    return float(val.mean()), float(val.std()), float(far.mean())


def roc_auc(similarity: np.ndarray, issame: np.ndarray) -> float:
    """P(similarity of a same pair > that of a different pair), ties counted half."""
    order = np.argsort(similarity, kind="mergesort")
    ranks = np.empty(len(similarity))
    s = similarity[order]
    # average ranks of ties
    _, start, counts = np.unique(s, return_index=True, return_counts=True)
    avg = start + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    n_pos, n_neg = issame.sum(), (~issame).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[issame].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def tar_at_far(
    similarity: np.ndarray, issame: np.ndarray, far: float
) -> tuple[float, float, float]:
    """``(tar, achieved far, cosine threshold)``: accept when similarity > threshold, the
    threshold chosen so that at most ``far`` of the different pairs are accepted."""
    neg = np.sort(similarity[~issame])[::-1]
    k = int(np.floor(far * len(neg)))
    threshold = float(neg[k]) if k < len(neg) else float(neg[-1]) - 1e-6
    accept = similarity > threshold
    return float(accept[issame].mean()), float(accept[~issame].mean()), threshold


def pair_cosines(embeddings: np.ndarray) -> np.ndarray:
    """The cosine of each pair of normalized embeddings (pairs are consecutive rows)."""
    embeddings = np.asarray(embeddings, np.float64)
    return np.sum(embeddings[0::2] * embeddings[1::2], 1)


def evaluate_embeddings(
    embeddings: np.ndarray, issame: np.ndarray, folds: int = 10
) -> dict[str, float]:
    """The verification report of normalized embeddings (pairs are consecutive rows)."""
    embeddings = np.asarray(embeddings, np.float64)
    issame = np.asarray(issame, bool)
    if len(issame) < folds:
        raise ValueError(
            f"{len(issame)} pairs: the {folds}-fold verification protocol needs at least "
            f"{folds} (one per fold); add pairs"
        )
    e1, e2 = embeddings[0::2], embeddings[1::2]
    dist = np.sum(np.square(e1 - e2), 1)
    _, _, accuracy = calculate_roc(np.arange(0, 4, 0.01), dist, issame, folds)
    val, val_std, far = calculate_val(np.arange(0, 4, 0.001), dist, issame, 1e-3, folds)
    cosine = pair_cosines(embeddings)
    out = {
        "acc": float(accuracy.mean()),
        "acc_std": float(accuracy.std()),
        "val@far1e-3": val,
        "val_std": val_std,
        "far": far,
        "auc": roc_auc(cosine, issame),
    }
    for target in FARS:
        tar, achieved, threshold = tar_at_far(cosine, issame, target)
        tag = f"{target:.0e}".replace("e-0", "e-")
        out[f"tar@far{tag}"] = tar
        out[f"far_achieved@far{tag}"] = achieved
        out[f"threshold_cos@far{tag}"] = threshold
        out[f"threshold_l2@far{tag}"] = 2 - 2 * threshold
    return out


def embedding_pairs(labels, max_negatives: int, seed: int = 0):
    """``(first, second, issame)`` index arrays over every pair ``i < j`` of ``labels`` with
    the same label and at most ``max_negatives`` of the others (drawn without replacement)."""
    labels = np.asarray(labels)
    n = len(labels)
    _, ids = np.unique(labels, return_inverse=True)
    order = np.argsort(ids, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(ids[order]) != 0, True])
    pos = [
        np.stack(np.triu_indices(b - a, 1)) + a for a, b in itertools.pairwise(starts) if b - a > 1
    ]
    pos = order[np.concatenate(pos, 1)] if pos else np.zeros((2, 0), np.int64)
    rng = np.random.default_rng(seed)
    if n * (n - 1) // 2 <= 4_000_000:  # every pair fits in memory: choose among them
        i, j = np.triu_indices(n, 1)
        keep = np.flatnonzero(ids[i] != ids[j])
        if keep.size > max_negatives:
            keep = np.sort(rng.choice(keep, max_negatives, replace=False))
        neg = np.stack([i[keep], j[keep]])
    else:  # sample pairs i < j until enough distinct different-person pairs are found
        found: set[tuple[int, int]] = set()
        while len(found) < max_negatives:
            a = rng.integers(0, n, 2 * (max_negatives - len(found)) + 16)
            b = rng.integers(0, n, a.size)
            lo, hi = np.minimum(a, b), np.maximum(a, b)
            for x, y in zip(lo[ids[lo] != ids[hi]].tolist(), hi[ids[lo] != ids[hi]].tolist()):
                if len(found) < max_negatives:
                    found.add((x, y))
        neg = np.array(sorted(found)).T
    first = np.concatenate([pos[0], neg[0]])
    second = np.concatenate([pos[1], neg[1]])
    issame = np.r_[np.ones(pos.shape[1], bool), np.zeros(neg.shape[1], bool)]
    shuffle = rng.permutation(first.size)  # folds mix both kinds
    return first[shuffle], second[shuffle], issame[shuffle]


def face_labels(names, labels=None) -> list[str]:
    """Who each face of an embeddings file is: its ``labels`` (galleries of photos), else the
    folder of each name (face crops in one folder per person, ``alice/1.jpg`` -> ``alice``)."""
    if labels is not None:
        return [str(v) for v in labels]
    names = [str(v) for v in names]
    if not all("/" in n for n in names):
        raise ValueError(
            "the file does not say who each face is: verification needs face crops in one "
            "folder per person (alice/1.jpg) or a gallery of photos in such folders"
        )
    return [n.rsplit("/", 1)[0] for n in names]


def purity(clusters, people) -> tuple[float, float]:
    """(purity, inverse purity) of a clustering: the share of faces in their cluster's main
    person, and of faces in their person's main cluster (``people``: integer ids)."""

    def share(a, b) -> float:
        total = 0
        for value in np.unique(a):
            total += np.bincount(b[a == value]).max()
        return total / len(a)

    clusters, people = np.asarray(clusters), np.asarray(people)
    return share(clusters, people), share(people, clusters)


class VerificationEvaluator(Evaluator):
    """The verification report of every set of a :class:`VerificationSuite` (``name/acc``,
    ``name/auc``, TAR@FAR, ...) and ``acc``, the mean accuracy over the sets.

    ``process(batch, embeddings)`` takes the batch's suite ``indices`` and their ``(B, D)``
    flip-summed, normalized embeddings; every rank's shard is gathered before scoring.
    """

    def __init__(self, suite: VerificationSuite) -> None:
        self.suite = suite
        self.reset()

    def reset(self) -> None:
        self.indices: list[int] = []
        self.embeddings: list[np.ndarray] = []
        self.last_curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def process(self, batch: dict[str, Any], embeddings: Any) -> None:
        self.embeddings.append(embeddings.float().cpu().numpy())
        self.indices += list(batch["indices"])

    def evaluate(self) -> dict[str, float]:
        dim = self.embeddings[0].shape[1] if self.embeddings else 0
        local = (
            np.array(self.indices, np.int64),
            np.concatenate(self.embeddings) if self.embeddings else np.zeros((0, dim)),
        )
        parts = D.gather_objects(local)  # every rank's shard before scoring
        idx = np.concatenate([p[0] for p in parts])
        emb = np.concatenate([p[1] for p in parts if len(p[1])])[np.argsort(idx)]
        suite = self.suite
        if len(emb) != len(suite):
            raise ValueError(
                f"evaluation produced {len(emb)} embeddings for {len(suite)} verification images"
            )
        out: dict[str, float] = {}
        accs = []
        for k, vset in enumerate(suite.sets):
            emb_set = emb[int(suite.starts[k]) : int(suite.starts[k + 1])]
            report = evaluate_embeddings(emb_set, vset.issame)
            accs.append(report["acc"])
            self.last_curves[vset.name] = (pair_cosines(emb_set), np.asarray(vset.issame, bool))
            out |= {
                f"{vset.name}/{key}": value
                for key, value in report.items()
                if not key.startswith("threshold")
            }
            out[f"{vset.name}/threshold_cos@far1e-3"] = report["threshold_cos@far1e-3"]
        out["acc"] = float(np.mean(accs)) if accs else float("nan")
        return out

    def write_report(self, folder: Path) -> str | None:
        """``roc.png``: the ROC curve of every verification set, thresholds marked."""
        if not self.last_curves:
            return None
        path = save_roc_png(self.last_curves, Path(folder) / "roc.png", FARS)
        return f"ROC curves -> {path}"
