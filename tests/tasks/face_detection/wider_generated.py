"""Generated WIDER FACE val ground truth (the kit's .mat layout) and predictions, for the
evaluation tests and the benchmark."""

from __future__ import annotations

import numpy as np
from scipy.io import savemat


def _cell(items) -> np.ndarray:
    out = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        out[i, 0] = item
    return out


def write_wider_mats(folder, seed: int, events: int = 4, images: int = 6, mean_faces: float = 6.0):
    """Ground truth in the layout of the WIDER FACE kit's .mat files: faces of many sizes,
    keep lists easy (large faces) within medium within hard, an image with no face, one whose
    faces are all outside every keep list. Returns ``(events, names, boxes)``."""
    rng = np.random.default_rng(seed)
    names, boxes = [], []
    keeps = {s: [] for s in ("easy", "medium", "hard")}
    event_names = [f"{e}--Event{e}" for e in range(events)]
    for e in range(events):
        names.append([f"{e}_Event_{e}_{j}" for j in range(images)])
        boxes.append([])
        for s in keeps:
            keeps[s].append([])
        for j in range(images):
            count = 0 if (e, j) == (0, 1) else int(rng.integers(1, round(2 * mean_faces)))
            xy = rng.uniform(0, 900, (count, 2))
            wh = np.exp(rng.uniform(np.log(4), np.log(300), (count, 2)))
            b = np.round(np.concatenate([xy, wh], 1))
            boxes[-1].append(b)
            side = np.minimum(b[:, 2], b[:, 3])
            hard = np.flatnonzero(side >= 6) + 1
            if (e, j) == (1, 2):
                hard = hard[:0]
            medium = hard[side[hard - 1] >= 20]
            easy = medium[side[medium - 1] >= 50]
            for s, kept in (("easy", easy), ("medium", medium), ("hard", hard)):
                keeps[s][-1].append(kept.reshape(-1, 1).astype(np.int32))
    savemat(
        folder / "wider_face_val.mat",
        {
            "event_list": _cell(event_names),
            "file_list": _cell([_cell(n) for n in names]),
            "face_bbx_list": _cell([_cell(b) for b in boxes]),
        },
    )
    for s, kept in keeps.items():
        savemat(folder / f"wider_{s}_val.mat", {"gt_list": _cell([_cell(k) for k in kept])})
    return event_names, names, boxes


def generated_predictions(
    val, seed: int, *, shuffle: bool = False, false_positives: int = 6
) -> list[np.ndarray]:
    """Per image: jittered copies of faces (some twice: duplicates), false positives, and
    scores with ties; best first unless ``shuffle``; one image has none."""
    rng = np.random.default_rng(seed)
    out = []
    for i, gt in enumerate(val.boxes):
        rows = []
        for b in gt:
            for _ in range(int(rng.choice([0, 1, 1, 2]))):
                jitter = rng.normal(0, 0.08, 4) * np.r_[b[2:], b[2:]]
                rows.append([*(b + jitter), rng.choice([rng.random(), 0.5])])
        for _ in range(int(rng.integers(0, false_positives))):
            rows.append([*rng.uniform(0, 900, 2), *rng.uniform(5, 200, 2), rng.random() * 0.7])
        p = np.array(rows, np.float64).reshape(-1, 5)
        p = p[rng.permutation(len(p))] if shuffle else p[np.argsort(-p[:, 4], kind="stable")]
        out.append(p if i != 3 else p[:0])
    return out
