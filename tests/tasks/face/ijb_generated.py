"""Generated IJB-style protocols, shaped as IJB-C's (one gallery template per subject, split into
G1 / G2; probe templates of the same subjects; template pairs between gallery and probe
templates), at any size up to the real one, with image features; and the meta files of the
official layout. For the protocol tests, the end-to-end test and the benchmark."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# the official IJB-C 1:1 / 1:N sizes
IJBC_FULL = {
    "images": 469_375,
    "gallery_templates": (1_772, 1_759),
    "probe_templates": 19_593,
    "pairs": 15_658_489,
    "genuine": 19_557,
}


@dataclass
class Protocol:
    templates: np.ndarray  # (N,) template id of each image row
    medias: np.ndarray  # (N,) media id of each image row
    faceness: np.ndarray  # (N,) float32
    features: np.ndarray  # (N, D) float32 flip-summed embeddings
    pairs: np.ndarray  # (P, 2) gallery template, probe template
    labels: np.ndarray  # (P,) bool
    galleries: list[tuple[np.ndarray, np.ndarray]]  # per gallery: template, subject per row
    probes: tuple[np.ndarray, np.ndarray]
    subject_of_template: dict[int, int]


def generate(
    *,
    gallery_templates: tuple[int, int] = (20, 20),
    probe_templates: int = 160,
    images: int = 1500,
    dim: int = 32,
    pairs: int | None = None,
    genuine: int | None = None,
    duplicate_templates: int = 0,
    noise: float = 1.0,
    spread: float = 0.0,
    shuffle_rows: bool = True,
    seed: int = 0,
) -> Protocol:
    """One gallery template per subject (``sum(gallery_templates)`` subjects), probe templates
    of random subjects; every template at least one image, medias of one image (stills) or
    several (video frames), media ids shared between some templates, ids neither contiguous
    nor in order, image rows shuffled. Features: a centre per subject, an offset per template
    and per media, noise per image (``spread`` > 0 makes some templates much noisier), lengths
    between 4 and 40 (quality); rows shuffled, or grouped by template. ``pairs`` (default: every
    gallery x probe pair) holds ``genuine`` mated pairs (default: all). The last
    ``duplicate_templates`` probe templates repeat the images of others (equal scores: ties)."""
    rng = np.random.default_rng(seed)
    n_gallery = sum(gallery_templates)
    n_templates = n_gallery + probe_templates
    n_own = n_templates - duplicate_templates  # templates with images of their own
    subjects = rng.choice(np.arange(10_000, 10_000 + 20 * n_gallery), n_gallery, replace=False)
    template_ids = rng.choice(np.arange(1, 50 * n_templates + 2), n_templates, replace=False)
    subject_index = np.r_[np.arange(n_gallery), rng.integers(0, n_gallery, probe_templates)]
    # images per template (each at least one), media per template, frames per media
    weights = rng.lognormal(0.0, 1.0, n_own)
    row_template = np.r_[
        np.arange(n_own), rng.choice(n_own, images - n_own, p=weights / weights.sum())
    ]
    n_media = 1 + rng.poisson(2.0, n_templates)
    media_base = np.r_[0, np.cumsum(n_media)[:-1]]
    u = rng.random(len(row_template)) ** 2  # low media numbers get more frames (videos)
    media_index = media_base[row_template] + np.minimum(
        (u * n_media[row_template]).astype(np.int64), n_media[row_template] - 1
    )
    media_ids = rng.choice(np.arange(1, 20 * n_media.sum() + 2), n_media.sum(), replace=False)
    # some videos appear in two templates of one subject (IJB shares media between templates)
    for t in rng.choice(np.arange(n_gallery, n_own), probe_templates // 8, replace=False):
        media_ids[media_base[t]] = media_ids[media_base[subject_index[t]]]
    f32 = np.float32
    centres = rng.standard_normal((n_gallery, dim), f32)
    # hard templates: the noise of each template scaled by a lognormal factor
    hard = rng.lognormal(0.0, spread, n_templates).astype(f32)[:, None] * f32(noise)
    t_off = f32(0.6) * hard * rng.standard_normal((n_templates, dim), f32)
    m_off = f32(0.5 * noise) * rng.standard_normal((n_media.sum(), dim), f32)
    feats = np.empty((len(row_template), dim), f32)
    for lo in range(0, len(feats), 1 << 16):  # in chunks: a full-size set is 1 GB
        hi = lo + (1 << 16)
        t = row_template[lo:hi]
        f = centres[subject_index[t]] + t_off[t] + m_off[media_index[lo:hi]]
        f += f32(0.8) * hard[t] * rng.standard_normal(f.shape, f32)
        f *= rng.uniform(4, 40, (len(f), 1)).astype(f32) / np.linalg.norm(f, axis=1, keepdims=True)
        feats[lo:hi] = f
    faceness = np.where(rng.random(len(feats)) < 0.05, rng.uniform(0.1, 0.9, len(feats)), 0.999)
    row_t, row_m = template_ids[row_template], media_ids[media_index]
    row_f, row_s = feats, np.round(faceness, 3)
    # duplicate templates: the images of another probe template again (exactly equal scores)
    for d in range(n_own, n_templates):
        src = int(rng.integers(n_gallery, n_own))
        subject_index[d] = subject_index[src]
        rows = np.flatnonzero(row_template == src)
        row_t = np.r_[row_t, np.full(len(rows), template_ids[d])]
        row_m, row_f, row_s = (
            np.r_[row_m, row_m[rows]],
            np.r_[row_f, row_f[rows]],
            np.r_[row_s, row_s[rows]],
        )
    if shuffle_rows:  # else grouped by template, as the official face_tid_mid.txt
        order = rng.permutation(len(row_t))
    else:
        order = np.argsort(row_t, kind="stable")
    row_t, row_m, row_f, row_s = row_t[order], row_m[order], row_f[order], row_s[order]
    # pairs: gallery x probe, the mated ones genuine
    probe_index = np.arange(n_gallery, n_templates)
    mated = probe_index[: genuine if genuine is not None else probe_templates]
    grid = n_gallery * probe_templates  # gallery-major cells (gallery, probe)
    negatives = (grid if pairs is None else pairs) - len(mated)
    share = min(1.0, 1.01 * negatives / (grid - probe_templates) + 1e-4)
    cells = np.flatnonzero(rng.random(grid, np.float32) < share) if share < 1 else np.arange(grid)
    g_cell, p_cell = np.divmod(cells, probe_templates)
    cells = cells[subject_index[n_gallery + p_cell] != g_cell]  # the mated cells are not impostors
    if len(cells) < negatives:
        raise ValueError(f"{negatives} impostor pairs asked, {len(cells)} drawn")
    cells = np.delete(cells, rng.choice(len(cells), len(cells) - negatives, replace=False))
    g_cell, p_cell = np.divmod(cells, probe_templates)
    first = np.r_[subject_index[mated], g_cell]
    second = np.r_[mated, n_gallery + p_cell]
    labels = np.r_[np.ones(len(mated), bool), np.zeros(len(g_cell), bool)]
    shuffle = rng.permutation(len(labels))
    pair_ids = np.stack([template_ids[first], template_ids[second]], 1)[shuffle]
    subject_of = dict(zip(template_ids.tolist(), subjects[subject_index].tolist()))
    by_id = np.argsort(template_ids)

    def rows_of(template_indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.flatnonzero(np.isin(row_t, template_ids[template_indices]))  # one per image
        t = by_id[np.searchsorted(template_ids, row_t[rows], sorter=by_id)]
        return row_t[rows], subjects[subject_index[t]].astype(np.int64)

    g1, g2 = gallery_templates
    return Protocol(
        templates=row_t.astype(np.int64, copy=False),
        medias=row_m.astype(np.int64, copy=False),
        faceness=row_s.astype(np.float32, copy=False),
        features=row_f.astype(np.float32, copy=False),
        pairs=pair_ids.astype(np.int64, copy=False),
        labels=labels[shuffle],
        galleries=[rows_of(np.arange(g1)), rows_of(np.arange(g1, g1 + g2))],
        probes=rows_of(probe_index),
        subject_of_template=subject_of,
    )


def _write_rows(path: Path, columns, header: str | None = None, sep: str = " ") -> None:
    """Text rows of integer / string columns, written in chunks (millions of rows)."""
    with open(path, "w") as f:
        if header:
            f.write(header + "\n")
        n = len(columns[0])
        for lo in range(0, n, 1_000_000):
            parts = [np.asarray(c[lo : lo + 1_000_000]).astype(str) for c in columns]
            f.write("\n".join(map(sep.join, zip(*(p.tolist() for p in parts)))) + "\n")


def write_meta(
    root: Path,
    protocol: Protocol,
    *,
    target: str = "IJBC",
    names: list[str] | None = None,
    landmarks: np.ndarray | None = None,
    one_to_n: bool = True,
) -> list[str]:
    """The meta files of ``root/meta`` in InsightFace's layout; returns the image names."""
    meta = Path(root) / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    t = target.lower()
    n = len(protocol.templates)
    names = names or [f"{i + 1}.jpg" for i in range(n)]
    if landmarks is None:
        landmarks = np.tile(
            np.array([38.3, 51.7, 73.5, 51.5, 56.0, 71.7, 41.5, 92.4, 70.7, 92.2]), (n, 1)
        )
    _write_rows(meta / f"{t}_face_tid_mid.txt", [names, protocol.templates, protocol.medias])
    marks = np.asarray(landmarks, np.float64).reshape(n, 10)
    text = [" ".join(f"{v:.3f}" for v in row) for row in marks]
    scores = [f"{s:.3f}" for s in protocol.faceness]
    _write_rows(meta / f"{t}_name_5pts_score.txt", [names, text, scores])
    p = protocol.pairs
    _write_rows(
        meta / f"{t}_template_pair_label.txt", [p[:, 0], p[:, 1], protocol.labels.astype(int)]
    )
    if one_to_n:
        gallery_names = ("G1", "G2") if t == "ijbc" else ("S1", "S2")
        parts = [*zip(gallery_names, protocol.galleries), ("probe_mixed", protocol.probes)]
        for name, (templates, subjects) in parts:
            file = f"{t}_1N_{'gallery_' if name != 'probe_mixed' else ''}{name}.csv"
            _write_rows(
                meta / file,
                [templates, subjects, [f"img/{k}.jpg" for k in range(len(templates))]],
                header="TEMPLATE_ID,SUBJECT_ID,FILENAME",
                sep=",",
            )
    return names


def write_ijb_folder(
    root: Path, protocol: Protocol, *, target: str = "IJBC", seed: int = 0, size: int = 112
) -> list[str]:
    """A complete IJB-style folder: the meta files and ``loose_crop/`` with one rendered photo
    per image row: a synthetic identity per subject (the face task's generator), drawn at
    ``size`` px and placed in a larger loose crop at a random offset, with the exact positions
    of its five landmarks in the meta file. Returns the image names."""
    import cv2

    from resvision.datasets.face import SyntheticFaces, render_face_parts

    rng = np.random.default_rng(seed)
    subjects = sorted(set(protocol.subject_of_template.values()))
    label = {s: i for i, s in enumerate(subjects)}
    people = SyntheticFaces(len(subjects), 1, image_size=size, seed=seed)
    crops = Path(root) / "loose_crop"
    crops.mkdir(parents=True, exist_ok=True)
    names, marks = [], []
    for i, template in enumerate(protocol.templates.tolist()):
        face = render_face_parts(
            people.identity(label[protocol.subject_of_template[template]]),
            np.random.default_rng([seed, i]),
            size,
        )
        pad = int(rng.integers(8, 24))
        h, w = size + 2 * pad, size + 2 * pad + int(rng.integers(0, 16))
        canvas = np.full((h, w, 3), int(rng.integers(0, 255)), np.uint8)
        dx, dy = int(rng.integers(0, w - size + 1)), int(rng.integers(0, h - size + 1))
        canvas[dy : dy + size, dx : dx + size] = face.image
        name = f"{i + 1}.jpg"
        cv2.imwrite(str(crops / name), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
        names.append(name)
        marks.append(face.landmarks + np.array([dx, dy], np.float32))
    write_meta(root, protocol, target=target, names=names, landmarks=np.stack(marks))
    return names
