"""Face verification sets: InsightFace ``.bin`` files and LFW-style ``pairs.txt``."""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import Dataset

from ..images import ImageReadError, read_rgb
from .alignment import resize_square, to_tensor
from .ijb import IJBImages


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
        numbers = {3: parts[1:3], 4: parts[1::2]}.get(len(parts), [])
        if not numbers or not all(x.isdigit() for x in numbers):
            raise ValueError(
                f"{pairs}: line {n + 1} is neither 'name i j' nor 'name1 i name2 j' (i, j image "
                f"numbers): {line!r}"
            )
        if len(parts) == 3:
            a, b, same = (parts[0], int(parts[1])), (parts[0], int(parts[2])), True
        else:
            a, b, same = (parts[0], int(parts[1])), (parts[2], int(parts[3])), False
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
                cache[index] = resize_square(self.images(index), self.image_size)
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
        return resize_square(image, self.image_size)

    def __getitem__(self, index) -> dict:
        index = index[0] if isinstance(index, tuple) else index
        return {"image": to_tensor(self.load(index)), "index": index}


class VerificationSuite(Dataset):
    """Several verification sets end to end, then the crops of an IJB folder (``ijb``,
    optional); items carry their position in the suite and a read error (IJB images that
    cannot be read are reported, not fatal)."""

    def __init__(self, sets: Sequence[VerificationSet], ijb: IJBImages | None = None) -> None:
        self.sets = list(sets)
        self.ijb = ijb
        self.starts = np.cumsum([0] + [len(s) for s in self.sets])

    @property
    def pair_images(self) -> int:
        """How many items belong to the verification sets (the IJB crops follow them)."""
        return int(self.starts[-1])

    def __len__(self) -> int:
        return self.pair_images + (len(self.ijb) if self.ijb is not None else 0)

    def __getitem__(self, index) -> dict:
        index = index[0] if isinstance(index, tuple) else index
        if index >= self.pair_images:
            item = self.ijb[index - self.pair_images]
            return {**item, "set": len(self.sets), "index": index}
        k = int(np.searchsorted(self.starts, index, side="right") - 1)
        item = self.sets[k][index - int(self.starts[k])]
        return {"image": item["image"], "set": k, "index": index, "error": ""}
