"""Drawing for face embeddings: the ROC curve of a verification set (true accepts against false
accepts over every cosine threshold), with the thresholds of the usual operating points."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from resvision.tasks.engine.files import atomic_write_bytes


def roc_curve(
    similarity: np.ndarray, issame: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(far, tar, threshold)`` at every distinct similarity, highest threshold first: a pair
    is accepted when its similarity is at least the threshold."""
    similarity = np.asarray(similarity, np.float64)
    issame = np.asarray(issame, bool)
    n_pos, n_neg = int(issame.sum()), int((~issame).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"a ROC curve needs same and different pairs ({n_pos} same, {n_neg} different)"
        )
    order = np.argsort(-similarity, kind="mergesort")
    s, same = similarity[order], issame[order]
    last_of_value = np.r_[s[1:] != s[:-1], True]  # ties are accepted together
    tar = np.cumsum(same)[last_of_value] / n_pos
    far = np.cumsum(~same)[last_of_value] / n_neg
    return far, tar, s[last_of_value]


def save_roc_png(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    fars: Sequence[float],
) -> Path:
    """One ROC curve per set (``name -> (similarity, issame)``) on a log false-accept axis,
    each operating point ``fars`` marked with its cosine threshold; written as a PNG."""
    points = {}
    for name, (similarity, issame) in curves.items():
        far, tar, threshold = roc_curve(similarity, issame)
        floor = 1.0 / max(int((~np.asarray(issame, bool)).sum()), 1)
        marks = []
        for target in fars:
            if target < floor:
                continue  # fewer different pairs than this operating point needs
            k = int(np.searchsorted(far, target, side="right")) - 1
            if k >= 0:
                marks.append(k)
        points[name] = (far, tar, threshold, marks)
    title = "verification ROC (points: FAR " + ", ".join(f"{f:g}" for f in fars) + ")"
    return save_roc_points_png(points, path, title=title)


def save_roc_points_png(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray, Sequence[int]]],
    path: str | Path,
    *,
    title: str,
) -> Path:
    """ROC curves given as points, ``name -> (far, tar, threshold, marked point indices)``
    (an IJB curve, read from its corners), on a log false-accept axis; the marked points are
    labelled with their cosine threshold. Written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, (far, tar, threshold, marks) in curves.items():
        positive = far[far > 0]
        floor = float(positive.min()) if positive.size else 1.0  # where FAR 0 is drawn
        (line,) = ax.plot(np.maximum(far, floor), tar, label=name)
        for k in marks:
            x = far[k] if far[k] > 0 else floor
            ax.plot(x, tar[k], "o", color=line.get_color())
            ax.annotate(
                f"cos >= {threshold[k]:.2f}",
                (x, tar[k]),
                textcoords="offset points",
                xytext=(4, -10),
                fontsize=7,
            )
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate (different people accepted)")
    ax.set_ylabel("true accept rate (same person accepted)")
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path
