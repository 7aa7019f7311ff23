"""Face-recognition data: alignment, identity folders, RecordIO, verification sets, synthetic faces.

Alignment is InsightFace's ``norm_crop``: a least-squares similarity transform (Umeyama) from 5
landmarks (left eye, right eye, nose tip, left and right mouth corners) to the ArcFace template
(SphereFace's 96x112 template shifted by +8 px in x), a bilinear warp and a black border; sizes
that are multiples of 112 scale the template, multiples of 128 scale the 112 template by
size/128 and shift it by 8 * size/128. One code path serves training data preparation,
evaluation and inference.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .images import IMAGE_SUFFIXES, ImageReadError, read_rgb
from .recordio import RecordReader, RecordWriter, pack, unpack

SPHEREFACE_96x112 = np.array(
    [
        [30.2946, 51.6963],
        [65.5318, 51.5014],
        [48.0252, 71.7366],
        [33.5493, 92.3655],
        [62.7299, 92.2041],
    ],
    np.float32,
)
ARCFACE_TEMPLATE = SPHEREFACE_96x112 + np.array([8.0, 0.0], np.float32)  # the 112x112 template


# -- alignment -------------------------------------------------------------------------------
def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` to
    ``dst`` (Umeyama 1991), as a 3x3 matrix."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    n, dim = src.shape
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / n
    d = np.ones(dim)
    if np.linalg.det(cov) < 0:
        d[-1] = -1
    u, s, vt = np.linalg.svd(cov)
    t = np.eye(dim + 1)
    rank = np.linalg.matrix_rank(cov)
    if rank == 0:
        raise ValueError("landmarks are all at one point: no similarity transform exists")
    if rank == dim - 1 and np.linalg.det(u) * np.linalg.det(vt) <= 0:
        keep = d[-1]
        d[-1] = -1
        t[:dim, :dim] = u @ np.diag(d) @ vt
        d[-1] = keep
    else:
        t[:dim, :dim] = u @ np.diag(d) @ vt
    scale = (s @ d) / src_c.var(0).sum()
    t[:dim, dim] = dst_mean - scale * (t[:dim, :dim] @ src_mean)
    t[:dim, :dim] *= scale
    return t


def template_for(image_size: int) -> np.ndarray:
    """The ArcFace template for a square crop of ``image_size`` (a multiple of 112 or 128)."""
    if image_size % 112 == 0:
        ratio, shift = image_size / 112.0, 0.0
    elif image_size % 128 == 0:
        ratio = image_size / 128.0
        shift = 8.0 * ratio
    else:
        raise ValueError(f"aligned crops are multiples of 112 or 128 pixels, got {image_size}")
    dst = ARCFACE_TEMPLATE * ratio
    dst[:, 0] += shift
    return dst


def estimate_norm(landmarks: np.ndarray, image_size: int = 112) -> np.ndarray:
    """The 2x3 affine matrix that aligns 5 ``landmarks`` (x, y) to the template."""
    landmarks = np.asarray(landmarks, np.float32)
    if landmarks.shape != (5, 2):
        raise ValueError(f"alignment needs 5 (x, y) landmarks, got shape {landmarks.shape}")
    return similarity_transform(landmarks, template_for(image_size))[:2]


def norm_crop(image: np.ndarray, landmarks: np.ndarray, image_size: int = 112) -> np.ndarray:
    """The aligned ``image_size`` square crop (bilinear, black border), InsightFace's norm_crop."""
    matrix = estimate_norm(landmarks, image_size)
    return cv2.warpAffine(image, matrix, (image_size, image_size), borderValue=0.0)


def read_landmarks(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Landmarks per image from JSON (``{"name.jpg": [[x, y] x 5]}``) or CSV
    (``name,x1,y1,...,x5,y5``), keyed by the file name relative to the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"landmark file {str(path)!r} does not exist")
    out: dict[str, np.ndarray] = {}
    if path.suffix.lower() == ".json":
        for name, pts in json.loads(path.read_text()).items():
            out[name] = np.asarray(pts, np.float32).reshape(5, 2)
    else:
        for row in csv.reader(path.read_text().splitlines()):
            if not row or row[0].startswith("#") or row[0] in ("name", "file", "image"):
                continue
            if len(row) != 11:
                raise ValueError(
                    f"{str(path)!r}: a landmark row needs a name and 10 numbers, got {row}"
                )
            out[row[0]] = np.asarray([float(v) for v in row[1:]], np.float32).reshape(5, 2)
    return out


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[:2] == (size, size):
        return image
    return cv2.resize(
        image,
        (size, size),
        interpolation=cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR,
    )


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def train_augment(image: np.ndarray, seed: int) -> np.ndarray:
    """arcface_torch's training augmentation: a random horizontal flip."""
    return image[:, ::-1] if np.random.default_rng(seed).random() < 0.5 else image


# -- training sets -----------------------------------------------------------------------------
class FaceFolder(Dataset):
    """``root/<identity>/<image>``: one folder per identity (sorted names -> labels 0..K-1).

    With ``landmarks`` (a JSON/CSV file of 5-point landmarks keyed by ``identity/image``) the
    images are aligned with :func:`norm_crop`; otherwise they are taken as aligned and resized.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        image_size: int = 112,
        landmarks: str | os.PathLike | None = None,
        augment: Callable | None = train_augment,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ImageReadError(f"identity folder {str(self.root)!r} does not exist")
        self.identities = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        self.files: list[str] = []
        labels = []
        for label, name in enumerate(self.identities):
            for f in sorted((self.root / name).iterdir()):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    self.files.append(f"{name}/{f.name}")
                    labels.append(label)
        if not self.files:
            raise ImageReadError(f"no images in identity folders under {str(self.root)!r}")
        self.labels = np.array(labels, np.int64)
        self.image_size = image_size
        self.landmarks = read_landmarks(landmarks) if landmarks else None
        self.augment = augment

    @property
    def num_classes(self) -> int:
        return len(self.identities)

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> np.ndarray:
        name = self.files[index]
        image = read_rgb(self.root / name)
        if self.landmarks is not None:
            if name not in self.landmarks:
                raise ImageReadError(f"no landmarks for {name!r} in the landmark file")
            align_size = 112 if self.image_size % 112 else self.image_size
            image = norm_crop(image, self.landmarks[name], align_size)
        return _resize(image, self.image_size)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        image = self.load(index)
        if seed is not None and self.augment is not None:
            image = self.augment(image, seed)
        return {"image": to_tensor(image), "label": int(self.labels[index])}


class RecordFaceDataset(Dataset):
    """InsightFace's ``train.rec`` + ``train.idx`` (MS1M, Glint360K, WebFace...), read in pure
    Python: label from the record header, image decoded from the payload."""

    def __init__(
        self,
        rec: str | os.PathLike,
        *,
        image_size: int = 112,
        augment: Callable | None = train_augment,
    ) -> None:
        rec = Path(rec)
        if rec.is_dir():
            rec = rec / "train.rec"
        self.reader = RecordReader(rec)
        flag, label, _ = unpack(self.reader.read(0))
        if flag > 0:  # InsightFace layout: record 0 describes the image range
            self.keys = list(range(1, int(label[0])))
        else:
            self.keys = self.reader.keys()
        self.image_size = image_size
        self.augment = augment
        self._num_classes: int | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def label(self, index: int) -> int:
        _, label, _ = unpack(self.reader.read(self.keys[index]))
        return int(label if np.ndim(label) == 0 else label[0])

    @property
    def num_classes(self) -> int:
        """Largest label + 1 (one pass over the headers, cached)."""
        if self._num_classes is None:
            self._num_classes = max(self.label(i) for i in range(len(self))) + 1
        return self._num_classes

    def load(self, index: int) -> tuple[np.ndarray, int]:
        key = self.keys[index]
        _, label, payload = unpack(self.reader.read(key))
        image = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ImageReadError(
                f"record {key} of {str(self.reader.rec_path)!r} holds no decodable image"
            )
        label = int(label if np.ndim(label) == 0 else label[0])
        return _resize(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), self.image_size), label

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        image, label = self.load(index)
        if seed is not None and self.augment is not None:
            image = self.augment(image, seed)
        return {"image": to_tensor(image), "label": label}


def folder_to_rec(folder: str | os.PathLike, rec: str | os.PathLike, *, quality: int = 95) -> int:
    """Write an identity folder as InsightFace RecordIO; returns the number of images."""
    ds = FaceFolder(folder, image_size=112, augment=None)
    with RecordWriter(rec) as writer:
        n = len(ds)
        writer.write(0, pack(np.array([n + 1, n + 1 + ds.num_classes], np.float32), b""))
        for i, name in enumerate(ds.files):
            image = read_rgb(ds.root / name)
            ok, buf = cv2.imencode(
                ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
            )
            if not ok:
                raise ImageReadError(f"cannot encode {name!r} as JPEG")
            writer.write(i + 1, pack(float(ds.labels[i]), buf.tobytes(), i + 1))
    return len(ds)


def rec_to_folder(rec: str | os.PathLike, folder: str | os.PathLike) -> int:
    """Write every image of a RecordIO set as ``folder/<label>/<index>.jpg`` (original bytes)."""
    ds = RecordFaceDataset(rec, augment=None)
    out = Path(folder)
    for i, key in enumerate(ds.keys):
        _, label, payload = unpack(ds.reader.read(key))
        label = int(label if np.ndim(label) == 0 else label[0])
        (out / f"{label:07d}").mkdir(parents=True, exist_ok=True)
        (out / f"{label:07d}" / f"{i:08d}.jpg").write_bytes(payload)
    return len(ds)


# -- verification sets -------------------------------------------------------------------------
class _BinUnpickler(pickle.Unpickler):
    """InsightFace .bin files are pickles of (list of bytes, list of bool): nothing else loads."""

    def find_class(self, module, name):
        if module in ("builtins", "__builtin__") and name in (
            "list",
            "tuple",
            "bytes",
            "bytearray",
            "bool",
        ):
            return getattr(__import__("builtins"), name)
        if (
            module == "numpy.core.multiarray"
            or module == "numpy._core.multiarray"
            or module == "numpy"
        ):
            raise pickle.UnpicklingError(
                f"numpy object {module}.{name} in a .bin file is not supported"
            )
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name} from a .bin verification file"
        )


def read_bin(path: str | os.PathLike) -> tuple[list[bytes], np.ndarray]:
    """An InsightFace verification ``.bin``: encoded images (pairs are consecutive) and issame."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"verification file {str(path)!r} does not exist")
    try:
        bins, issame = _BinUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except Exception as e:
        raise ImageReadError(f"cannot read verification file {str(path)!r}: {e}") from e
    if len(bins) != 2 * len(issame):
        raise ImageReadError(f"{str(path)!r} holds {len(bins)} images for {len(issame)} pairs")
    return [bytes(b) for b in bins], np.asarray(issame, bool)


def write_bin(path: str | os.PathLike, images: Sequence[bytes], issame: Sequence[bool]) -> None:
    with open(path, "wb") as f:
        pickle.dump((list(images), [bool(x) for x in issame]), f, protocol=pickle.HIGHEST_PROTOCOL)


def read_pairs(
    pairs: str | os.PathLike, root: str | os.PathLike, suffix: str = ".jpg"
) -> tuple[list[Path], np.ndarray]:
    """LFW-style ``pairs.txt``: ``name i j`` (same person) or ``name1 i name2 j`` (different);
    images at ``root/name/name_{i:04d}.jpg``. A first line of 1-2 numbers (folds, pairs) is
    skipped. Returns the image paths (pairs consecutive) and issame."""
    files: list[Path] = []
    issame = []
    root = Path(root)
    for n, line in enumerate(Path(pairs).read_text().splitlines()):
        parts = line.split()
        if not parts or (n == 0 and all(p.isdigit() for p in parts)):
            continue
        if len(parts) == 3:
            a, b, same = (parts[0], int(parts[1])), (parts[0], int(parts[2])), True
        elif len(parts) == 4:
            a, b, same = (parts[0], int(parts[1])), (parts[2], int(parts[3])), False
        else:
            raise ValueError(
                f"{pairs}: line {n + 1} is neither 'name i j' nor 'name1 i name2 j': {line!r}"
            )
        for name, i in (a, b):
            files.append(root / name / f"{name}_{i:04d}{suffix}")
        issame.append(same)
    return files, np.asarray(issame, bool)


class VerificationSet(Dataset):
    """The images of verification pairs (2 per pair), from a .bin or from files.

    Items are ``{"image", "index"}``; the embedding of image ``2k`` and ``2k+1`` form pair ``k``.
    """

    def __init__(
        self,
        name: str,
        images: Sequence[bytes] | Sequence[Path] | Callable[[int], np.ndarray],
        issame: np.ndarray,
        *,
        image_size: int = 112,
        count: int | None = None,
    ) -> None:
        self.name = name
        self.images = images
        self.issame = np.asarray(issame, bool)
        self.image_size = image_size
        self.count = count if count is not None else len(images)  # type: ignore[arg-type]

    @classmethod
    def from_bin(cls, path: str | os.PathLike, image_size: int = 112) -> VerificationSet:
        bins, issame = read_bin(path)
        return cls(Path(path).stem, bins, issame, image_size=image_size)

    @classmethod
    def from_pairs(
        cls, pairs: str | os.PathLike, root: str | os.PathLike, image_size: int = 112
    ) -> VerificationSet:
        files, issame = read_pairs(pairs, root)
        return cls(Path(pairs).stem, files, issame, image_size=image_size)

    def __len__(self) -> int:
        return self.count

    def load(self, index: int) -> np.ndarray:
        if callable(self.images):  # generated images: render once, keep (they are small)
            cache = self.__dict__.setdefault("_cache", {})
            if index not in cache:
                cache[index] = _resize(self.images(index), self.image_size)
            return cache[index]
        item = self.images[index]
        if isinstance(item, bytes | bytearray):
            image = cv2.imdecode(np.frombuffer(item, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise ImageReadError(f"{self.name}: image {index} cannot be decoded")
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        elif isinstance(item, np.ndarray):
            image = item
        else:
            image = read_rgb(item)
        return _resize(image, self.image_size)

    def __getitem__(self, index) -> dict:
        index = index[0] if isinstance(index, tuple) else index
        return {"image": to_tensor(self.load(index)), "index": index}


# -- synthetic identities ------------------------------------------------------------------------
def _identity_params(rng: np.random.Generator) -> dict:
    def hsv(h: float, s: float, v: float) -> np.ndarray:
        return cv2.cvtColor(np.uint8([[[h % 180, s, v]]]), cv2.COLOR_HSV2RGB)[0, 0].astype(float)

    return {
        "skin": hsv(rng.uniform(5, 25), rng.uniform(40, 170), rng.uniform(90, 240)),
        "axes": (rng.uniform(27, 38), rng.uniform(36, 47)),
        "hair": hsv(rng.uniform(0, 180), rng.uniform(0, 255), rng.uniform(20, 230)),
        "hair_style": int(rng.integers(0, 4)),
        "eye_dx": rng.uniform(13, 21),
        "eye_y": rng.uniform(-10, -2),
        "eye_r": rng.uniform(2.5, 5.5),
        "iris": hsv(rng.uniform(0, 180), rng.uniform(80, 255), rng.uniform(40, 200)),
        "brow_tilt": rng.uniform(-0.35, 0.35),
        "brow_w": int(rng.integers(1, 4)),
        "nose_len": rng.uniform(6, 15),
        "nose_w": rng.uniform(3, 9),
        "mouth_w": rng.uniform(9, 22),
        "mouth_y": rng.uniform(15, 24),
        "mouth_curve": rng.uniform(-5, 5),
        "lips": hsv(rng.uniform(-10, 10), rng.uniform(80, 220), rng.uniform(80, 220)),
        "glasses": bool(rng.random() < 0.2),
        "mole": (rng.uniform(-20, 20), rng.uniform(-10, 25)) if rng.random() < 0.35 else None,
        "ears": rng.uniform(3, 8),
    }


def render_face(identity: dict, rng: np.random.Generator, size: int = 112) -> np.ndarray:
    """One photo of ``identity``: its features drawn at 112 px (eyes near the ArcFace template),
    then a random pose, lighting, colour cast, background, noise and blur."""
    s = 2  # supersampling for smooth edges
    canvas = np.empty((112 * s, 112 * s, 3), np.float32)
    bg = rng.uniform(20, 235, 3)
    canvas[:] = bg
    gy = np.linspace(-1, 1, 112 * s, dtype=np.float32)[:, None, None]
    canvas += gy * rng.uniform(-30, 30, 3)  # background gradient
    p = identity
    cx, cy = 56.0, 66.0
    pt = lambda x, y: (int((cx + x) * s), int((cy + y) * s))  # noqa: E731
    ax = (int(p["axes"][0] * s), int(p["axes"][1] * s))
    for side in (-1, 1):  # ears
        cv2.ellipse(
            canvas,
            pt(side * p["axes"][0], 0),
            (int(p["ears"] * s), int(p["ears"] * 1.8 * s)),
            0,
            0,
            360,
            p["skin"] * 0.9,
            -1,
        )
    if p["hair_style"] == 2:  # long hair behind the face
        cv2.ellipse(canvas, pt(0, 5), (ax[0] + 8 * s, ax[1] + 6 * s), 0, 0, 360, p["hair"], -1)
    cv2.ellipse(canvas, pt(0, 0), ax, 0, 0, 360, p["skin"], -1)
    if p["hair_style"] in (1, 2):
        cv2.ellipse(
            canvas,
            pt(0, -p["axes"][1] * 0.55),
            (ax[0] + s, int(ax[1] * 0.55)),
            0,
            180,
            360,
            p["hair"],
            -1,
        )
    elif p["hair_style"] == 3:
        cv2.ellipse(
            canvas,
            pt(0, -p["axes"][1] * 0.6),
            (ax[0], int(ax[1] * 0.45)),
            0,
            160,
            380,
            p["hair"],
            -1,
        )
    for side in (-1, 1):
        ex, ey = side * p["eye_dx"], p["eye_y"] - 4
        cv2.ellipse(
            canvas,
            pt(ex, ey),
            (int(p["eye_r"] * 1.6 * s), int(p["eye_r"] * s)),
            0,
            0,
            360,
            (245, 245, 245),
            -1,
        )
        cv2.circle(canvas, pt(ex, ey), int(p["eye_r"] * 0.75 * s), p["iris"], -1)
        cv2.circle(canvas, pt(ex, ey), int(p["eye_r"] * 0.3 * s), (15, 15, 15), -1)
        tilt = side * p["brow_tilt"] * 6
        cv2.line(
            canvas,
            pt(ex - 6, ey - 7 + tilt),
            pt(ex + 6, ey - 7 - tilt),
            p["hair"] * 0.6,
            p["brow_w"] * s,
        )
        if p["glasses"]:
            cv2.circle(canvas, pt(ex, ey), int((p["eye_r"] + 4) * s), (30, 30, 30), s)
    nose = np.array(
        [pt(0, -2), pt(-p["nose_w"] / 2, p["nose_len"]), pt(p["nose_w"] / 2, p["nose_len"])],
        np.int32,
    )
    cv2.fillPoly(canvas, [nose], p["skin"] * 0.8)
    mouth = np.array(
        [
            pt(x, p["mouth_y"] + p["mouth_curve"] * (1 - (2 * x / p["mouth_w"]) ** 2))
            for x in np.linspace(-p["mouth_w"] / 2, p["mouth_w"] / 2, 9)
        ],
        np.int32,
    )
    cv2.polylines(canvas, [mouth], False, p["lips"], 3 * s)
    if p["mole"] is not None:
        cv2.circle(canvas, pt(*p["mole"]), int(1.6 * s), (60, 40, 30), -1)
    image = cv2.resize(canvas, (112, 112), interpolation=cv2.INTER_AREA)
    # pose: rotation, scale, shift; lighting; colour cast; noise; blur
    matrix = cv2.getRotationMatrix2D(
        (56 + rng.uniform(-3, 3), 60 + rng.uniform(-3, 3)),
        rng.uniform(-12, 12),
        rng.uniform(0.9, 1.1),
    )
    matrix[:, 2] += rng.uniform(-4, 4, 2)
    image = cv2.warpAffine(image, matrix, (112, 112), borderMode=cv2.BORDER_REPLICATE)
    gx = np.linspace(-1, 1, 112, dtype=np.float32)[None, :, None]
    image = image * rng.uniform(0.7, 1.25) * (1 + gx * rng.uniform(-0.25, 0.25)) + rng.uniform(
        -20, 20, 3
    )
    image = image + rng.normal(0, rng.uniform(2, 7), image.shape)
    if rng.random() < 0.3:
        image = cv2.GaussianBlur(image, (3, 3), rng.uniform(0.3, 1.0))
    image = np.clip(image, 0, 255).astype(np.uint8)
    return _resize(image, size)


class SyntheticFaces(Dataset):
    """``num_identities`` procedurally generated people, ``images_per_identity`` photos each,
    deterministic by seed: each identity has its own face shape, skin, hair, eyes, brows, nose,
    mouth and marks; each photo its own pose, lighting, colour cast, background and noise."""

    def __init__(
        self,
        num_identities: int,
        images_per_identity: int,
        *,
        image_size: int = 112,
        seed: int = 0,
        augment: Callable | None = train_augment,
    ) -> None:
        self.num_identities = num_identities
        self.per_identity = images_per_identity
        self.image_size = image_size
        self.seed = seed
        self.augment = augment
        self._params: dict[int, dict] = {}

    @property
    def num_classes(self) -> int:
        return self.num_identities

    def __len__(self) -> int:
        return self.num_identities * self.per_identity

    def identity(self, label: int) -> dict:
        if label not in self._params:
            self._params[label] = _identity_params(np.random.default_rng([self.seed, label]))
        return self._params[label]

    def render(self, label: int, shot: int) -> np.ndarray:
        return render_face(
            self.identity(label),
            np.random.default_rng([self.seed, label, shot, 1]),
            self.image_size,
        )

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        label, shot = divmod(index, self.per_identity)
        image = self.render(label, shot)
        if seed is not None and self.augment is not None:
            image = self.augment(image, seed)
        return {"image": to_tensor(image), "label": label}

    def verification_set(self, num_pairs: int, *, seed: int = 1) -> VerificationSet:
        """``num_pairs`` pairs (half same, half different identity) of these identities."""
        rng = np.random.default_rng([self.seed, seed, 7])
        shots = []
        issame = []
        for k in range(num_pairs):
            a = int(rng.integers(self.num_identities))
            same = k % 2 == 0
            b = a if same else int((a + rng.integers(1, self.num_identities)) % self.num_identities)
            i, j = rng.choice(self.per_identity, 2, replace=False)
            shots += [(a, int(i)), (b, int(j))]
            issame.append(same)
        return VerificationSet(
            f"synthetic_{seed}",
            lambda n: self.render(*shots[n]),
            np.asarray(issame),
            image_size=self.image_size,
            count=len(shots),
        )
