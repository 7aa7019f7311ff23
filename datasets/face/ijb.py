"""IJB-B / IJB-C in InsightFace's layout: the meta files, and the aligned loose crops.

``ROOT/meta/{target}_face_tid_mid.txt``     ``name template_id media_id``, one row per face image
``ROOT/meta/{target}_name_5pts_score.txt``  ``name x1 y1 ... x5 y5 faceness``, the same rows
``ROOT/meta/{target}_template_pair_label.txt``  ``template_1 template_2 label`` (1:1 pairs)
``ROOT/meta/{target}_1N_gallery_G1.csv`` ...    ``TEMPLATE_ID,SUBJECT_ID,FILENAME,...`` (1:N;
                                            IJB-B names its galleries S1 / S2)
``ROOT/loose_crop/{name}``                  the face images

``{target}`` is ``ijbb`` or ``ijbc``. Sizes of the official files: IJB-C 469,375 images,
23,124 templates, 15,658,489 pairs (19,557 genuine), 1:N galleries G1 1,772 and G2 1,759
templates with 19,593 probe templates; IJB-B 227,630 images, 12,115 templates, 8,010,270 pairs
(10,270 genuine). Numbers are parsed as InsightFace's scripts parse them (faceness scores as
float32 from their text), so features computed here meet the same inputs; the tables are read
by NumPy's C reader (the 15.66 million IJB-C pairs in a few seconds).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from ..images import ImageReadError, read_rgb
from .alignment import align_crop, to_tensor

IJB_TARGETS = ("IJBB", "IJBC")
# the 1:N gallery files' names: IJB-C's G1 / G2, IJB-B's S1 / S2
GALLERY_NAMES = {"IJBB": ("S1", "S2"), "IJBC": ("G1", "G2")}


def check_target(target: str) -> str:
    """``IJBB`` or ``IJBC`` (any case); a clear error otherwise."""
    name = str(target).upper().replace("-", "")
    if name not in IJB_TARGETS:
        raise ValueError(f"IJB target {target!r} is not one of {', '.join(IJB_TARGETS)}")
    return name


def meta_paths(root: str | os.PathLike, target: str) -> dict[str, Path]:
    """Where each meta file of ``target`` lives under ``root``."""
    target = check_target(target)
    meta, t = Path(root) / "meta", target.lower()
    g1, g2 = GALLERY_NAMES[target]
    return {
        "face_tid_mid": meta / f"{t}_face_tid_mid.txt",
        "name_5pts_score": meta / f"{t}_name_5pts_score.txt",
        "template_pair_label": meta / f"{t}_template_pair_label.txt",
        g1: meta / f"{t}_1N_gallery_{g1}.csv",
        g2: meta / f"{t}_1N_gallery_{g2}.csv",
        "probe_mixed": meta / f"{t}_1N_probe_mixed.csv",
    }


def _need(path: Path, what: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(
            f"IJB meta file {str(path)!r} ({what}) does not exist: ROOT must hold meta/ and "
            "loose_crop/ as InsightFace distributes IJB-B / IJB-C"
        )
    if path.stat().st_size == 0:
        raise ValueError(f"IJB meta file {str(path)!r} ({what}) is empty")


def _table(
    path: Path,
    dtype,
    usecols: Sequence[int],
    *,
    what: str,
    delimiter: str | None = None,
    skip: int = 0,
) -> np.ndarray:
    """Columns ``usecols`` of a text table, parsed by NumPy's C reader (millions of rows in
    seconds); on a malformed file, the first bad line is found and named."""
    try:
        return np.loadtxt(
            path, dtype=dtype, usecols=usecols, delimiter=delimiter, skiprows=skip, ndmin=2
        )
    except ValueError:
        pass
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.strip().split(delimiter)
            if number <= skip or not line.strip():
                continue
            if len(fields) <= max(usecols):
                raise ValueError(
                    f"{str(path)!r} line {number}: expected {max(usecols) + 1} fields ({what}), "
                    f"got {len(fields)}: {line.strip()[:80]!r}"
                )
            try:
                np.array([fields[c] for c in usecols]).astype(dtype)
            except ValueError:
                raise ValueError(
                    f"{str(path)!r} line {number}: {what} must be numbers, got "
                    f"{line.strip()[:80]!r}"
                ) from None
    raise ValueError(f"{str(path)!r} cannot be read as rows of {what}")


def _first_column(path: Path, delimiter: str | None = None) -> np.ndarray:
    """The first field of every non-empty line (image names)."""
    with open(path, encoding="utf-8") as f:
        return np.array([line.split(delimiter, 1)[0].strip() for line in f if line.strip()])


def read_template_media(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``face_tid_mid.txt``: ``(names (N,) str, templates (N,) int64, medias (N,) int64)``."""
    path = Path(path)
    _need(path, "image -> template, media")
    ids = _table(path, np.int64, (1, 2), what="'name template_id media_id'")
    return _first_column(path), ids[:, 0], ids[:, 1]


def read_landmarks_scores(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``name_5pts_score.txt``: ``(names (N,), landmarks (N, 5, 2) float32, faceness (N,)
    float32)``, each number converted from its text to float32 as InsightFace's scripts do."""
    path = Path(path)
    _need(path, "image name, 5 landmarks, faceness score")
    numbers = _table(path, np.float32, range(1, 12), what="'name x1 y1 ... x5 y5 score'")
    return _first_column(path), numbers[:, :10].reshape(-1, 5, 2), numbers[:, 10].copy()


def read_template_pairs(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``template_pair_label.txt``: ``(pairs (P, 2) int64 template ids, labels (P,) bool)``."""
    path = Path(path)
    _need(path, "1:1 template pairs and labels")
    table = _table(path, np.int64, (0, 1, 2), what="'template template label'")
    labels = table[:, 2]
    if table.size and not np.isin(labels, (0, 1)).all():
        bad = int(np.flatnonzero(~np.isin(labels, (0, 1)))[0])
        raise ValueError(
            f"{str(path)!r} line {bad + 1}: the label must be 1 (same person) or 0, got "
            f"{labels[bad]}"
        )
    return np.ascontiguousarray(table[:, :2]), labels.astype(bool)


@dataclass
class TemplateSubjects:
    """A 1:N gallery or probe set: the template and subject id of each row of its CSV."""

    name: str
    templates: np.ndarray  # (R,) int64
    subjects: np.ndarray  # (R,) int64


def read_template_subjects(path: str | os.PathLike, name: str) -> TemplateSubjects:
    """A 1:N CSV (``TEMPLATE_ID,SUBJECT_ID,...`` after a header line)."""
    path = Path(path)
    _need(path, f"1:N {name}: template, subject")
    ids = _table(path, np.int64, (0, 1), what="'TEMPLATE_ID,SUBJECT_ID,...'", delimiter=",", skip=1)
    return TemplateSubjects(name, ids[:, 0], ids[:, 1])


@dataclass
class IJBMeta:
    """Everything the IJB protocols read, row ``i`` of every per-image array being image ``i``
    of ``name_5pts_score.txt`` (the order of the features)."""

    target: str
    root: Path
    names: np.ndarray  # (N,) image file names under loose_crop/
    landmarks: np.ndarray  # (N, 5, 2) float32
    faceness: np.ndarray  # (N,) float32 detector scores
    templates: np.ndarray  # (N,) int64
    medias: np.ndarray  # (N,) int64
    pairs: np.ndarray  # (P, 2) int64 template ids
    labels: np.ndarray  # (P,) bool: the same person
    galleries: list[TemplateSubjects] = field(default_factory=list)  # 1:N, or empty
    probes: TemplateSubjects | None = None

    def __len__(self) -> int:
        return len(self.names)

    @property
    def image_dir(self) -> Path:
        return self.root / "loose_crop"

    def image_paths(self) -> list[Path]:
        return [self.image_dir / str(n) for n in self.names]


def read_ijb_meta(root: str | os.PathLike, target: str, *, one_to_n: bool = True) -> IJBMeta:
    """The meta files of ``ROOT/meta`` for ``target`` (``IJBB`` / ``IJBC``). The 1:N files are
    read when all three exist (``one_to_n``); a missing 1:1 file, rows that disagree between
    ``face_tid_mid`` and ``name_5pts_score``, or one 1:N file without the others raise."""
    target = check_target(target)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"IJB root {str(root)!r} is not a folder")
    paths = meta_paths(root, target)
    names, templates, medias = read_template_media(paths["face_tid_mid"])
    names5, landmarks, faceness = read_landmarks_scores(paths["name_5pts_score"])
    if len(names5) != len(names):
        raise ValueError(
            f"{str(paths['name_5pts_score'])!r} has {len(names5)} rows and "
            f"{str(paths['face_tid_mid'])!r} {len(names)}: both list every face image, in one "
            "order"
        )
    differ = np.flatnonzero(names5 != names)
    if differ.size:
        i = int(differ[0])
        raise ValueError(
            f"row {i + 1} names {str(names5[i])!r} in {paths['name_5pts_score'].name} but "
            f"{str(names[i])!r} in {paths['face_tid_mid'].name}: both files must list the "
            "images in one order"
        )
    pairs, labels = read_template_pairs(paths["template_pair_label"])
    meta = IJBMeta(target, root, names5, landmarks, faceness, templates, medias, pairs, labels)
    one_n = [*GALLERY_NAMES[target], "probe_mixed"]
    present = [k for k in one_n if paths[k].is_file()]
    if one_to_n and present:
        if len(present) != len(one_n):
            missing = next(paths[k] for k in one_n if k not in present)
            raise FileNotFoundError(
                f"1:N meta file {str(missing)!r} does not exist while "
                f"{paths[present[0]].name} does: the 1:N protocol needs both galleries and the "
                "probes"
            )
        meta.galleries = [read_template_subjects(paths[k], k) for k in GALLERY_NAMES[target]]
        meta.probes = read_template_subjects(paths["probe_mixed"], "probes")
    return meta


class IJBImages(Dataset):
    """Aligned face crops of images given with five landmarks each (IJB's loose crops and the
    meta file's landmarks): :func:`align_crop` (``norm_crop`` to 112 px, as InsightFace's
    scripts, then resized to ``image_size``). Items are ``{"image": (3, S, S) uint8, "index":
    i, "error": ""}``; an image that cannot be read gives a black crop and its error message.
    :meth:`from_meta` keeps the meta beside the images (for the evaluator)."""

    def __init__(
        self, paths: Sequence[str | os.PathLike], landmarks: np.ndarray, *, image_size: int = 112
    ) -> None:
        if len(paths) != len(landmarks):
            raise ValueError(f"{len(paths)} images but {len(landmarks)} sets of landmarks")
        self.paths = [Path(p) for p in paths]
        self.landmarks = np.asarray(landmarks, np.float32).reshape(-1, 5, 2)
        self.image_size = image_size
        self.meta: IJBMeta | None = None

    @classmethod
    def from_meta(cls, meta: IJBMeta, *, image_size: int = 112) -> IJBImages:
        crops = cls(meta.image_paths(), meta.landmarks, image_size=image_size)
        crops.meta = meta
        return crops

    def __getstate__(self) -> dict:
        """What a DataLoader worker receives: the images' paths and landmarks, not the meta
        (IJB-C's pairs alone are 250 MB)."""
        return {**self.__dict__, "meta": None}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index) -> dict:
        index = index[0] if isinstance(index, tuple) else index
        try:
            image = read_rgb(self.paths[index])
            crop = align_crop(image, self.landmarks[index], self.image_size)
            error = ""
        except ImageReadError as e:
            crop, error = np.zeros((self.image_size, self.image_size, 3), np.uint8), str(e)
        return {"image": to_tensor(crop), "index": index, "error": error}
