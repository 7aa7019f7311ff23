"""Face-recognition training sets: identity folders and InsightFace RecordIO (read and written
without MXNet)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import Dataset

from ..images import ImageReadError, read_rgb
from ..inputs import IMAGE_SUFFIXES
from ..recordio import RecordReader, RecordWriter, pack, unpack
from .alignment import norm_crop, read_landmarks, resize_square, to_tensor

log = logging.getLogger(__name__)


def train_augment(image: np.ndarray, seed: int) -> np.ndarray:
    """arcface_torch's training augmentation: a random horizontal flip."""
    return image[:, ::-1] if np.random.default_rng(seed).random() < 0.5 else image


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
        return resize_square(image, self.image_size)

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
        return resize_square(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), self.image_size), label

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        image, label = self.load(index)
        if seed is not None and self.augment is not None:
            image = self.augment(image, seed)
        return {"image": to_tensor(image), "label": label}


def names_path(rec: str | os.PathLike) -> Path:
    """The identity names written next to a ``.rec`` (one per line, in label order)."""
    return Path(rec).with_suffix(".names")


def folder_to_rec(folder: str | os.PathLike, rec: str | os.PathLike, *, quality: int = 95) -> int:
    """Write an identity folder as InsightFace RecordIO (``.rec`` + ``.idx``, and the identity
    names in ``.names``); returns the number of images written. An unreadable image is skipped
    with a warning that names it."""
    ds = FaceFolder(folder, image_size=112, augment=None)
    written = 0
    with RecordWriter(rec) as writer:
        for name, label in zip(ds.files, ds.labels):
            try:
                image = read_rgb(ds.root / name)
            except ImageReadError as e:
                log.warning("skipped %s: %s", name, e)
                continue
            ok, buf = cv2.imencode(
                ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
            )
            if not ok:
                raise ImageReadError(f"cannot encode {name!r} as JPEG")
            written += 1
            writer.write(written, pack(float(label), buf.tobytes(), written))
        # InsightFace's header (record 0: the image key range); its place in the file is free,
        # the index finds it
        n = written
        writer.write(0, pack(np.array([n + 1, n + 1 + ds.num_classes], np.float32), b""))
    names = names_path(rec)
    tmp = names.with_name(names.name + ".tmp")
    tmp.write_text("".join(f"{identity}\n" for identity in ds.identities))
    os.replace(tmp, names)
    return written


def rec_to_folder(rec: str | os.PathLike, folder: str | os.PathLike) -> int:
    """Write every image of a RecordIO set as ``folder/<identity>/<index>.jpg`` (original
    bytes); identities are named as in the ``.names`` file written with the ``.rec``, else by
    their label (``0000042``)."""
    ds = RecordFaceDataset(rec, augment=None)
    names_file = names_path(ds.reader.rec_path)
    names = names_file.read_text().splitlines() if names_file.is_file() else []
    out = Path(folder)
    for i, key in enumerate(ds.keys):
        _, label, payload = unpack(ds.reader.read(key))
        label = int(label if np.ndim(label) == 0 else label[0])
        identity = names[label] if label < len(names) else f"{label:07d}"
        (out / identity).mkdir(parents=True, exist_ok=True)
        (out / identity / f"{i:08d}.jpg").write_bytes(payload)
    return len(ds)
