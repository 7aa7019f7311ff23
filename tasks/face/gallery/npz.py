"""Today's ``.npz`` files of ``resvision face embed``, read into a gallery and written from one.

Two kinds: embeddings of face crops (``embeddings`` (N, D), ``names`` = relative paths,
optionally ``labels``), and galleries of photos written with ``--detector`` (also ``labels``,
``photos``, ``paths``, ``face_index``, ``boxes``, ``scores``, ``landmarks`` and
``photos_without_faces``). Either may hold ``source``: the JSON of the
:class:`~.base.EmbeddingSource` that made it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .source import METADATA, EmbeddingSource

if TYPE_CHECKING:
    from .base import Gallery

PHOTO_KEYS = ("photos", "paths", "face_index", "boxes", "scores", "landmarks")


def crop_label(name: str) -> str:
    """Who a face crop is: its folder (``alice/1.jpg`` -> ``alice``), ``""`` at the top."""
    return name.rsplit("/", 1)[0] if "/" in name else ""


def read_npz(path: Any) -> tuple[dict[str, Any], EmbeddingSource | None]:
    """``(add arguments, source)`` of an ``.npz`` of ``face embed``: ``embeddings``,
    ``names``, ``labels`` (the file's, else each crop's folder) and, for a gallery of photos,
    the per-face metadata and ``photos_without_faces``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"embedding file {str(path)!r} does not exist")
    try:
        data = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError):
        data = None
    if data is None or not hasattr(data, "files") or not {"embeddings", "names"} <= set(data.files):
        raise ValueError(
            f"{str(path)!r} is not an embedding file: give an .npz written by `resvision face "
            "embed` (arrays 'embeddings' and 'names')"
        )
    with data:
        names = [str(n) for n in data["names"]]
        out: dict[str, Any] = {
            "embeddings": data["embeddings"].astype(np.float32),
            "names": names,
            "labels": (
                [str(v) for v in data["labels"]]
                if "labels" in data.files
                else [crop_label(n) for n in names]
            ),
        }
        if "boxes" in data.files:
            missing = [k for k in PHOTO_KEYS if k not in data.files]
            if missing:
                raise ValueError(f"{str(path)!r} is a gallery of photos without {missing}")
            for key in PHOTO_KEYS:
                out[key] = data[key].astype(METADATA[key][0])
            if "photos_without_faces" in data.files:
                out["photos_without_faces"] = [str(v) for v in data["photos_without_faces"]]
        source = EmbeddingSource.from_json(str(data["source"])) if "source" in data.files else None
    return out, source


def write_npz(gallery: Gallery, path: Any) -> str:
    """Write ``gallery`` as a gallery of photos when every face knows its photo and box, else
    as embeddings of face crops (names and labels); atomically. Returns the kind written."""
    from resvision.tasks.engine.files import atomic_open

    faces = gallery.faces()
    arrays: dict[str, np.ndarray] = {
        "embeddings": np.asarray(gallery.embeddings(), np.float32),
        "names": faces["name"],
        "labels": faces["label"],
    }
    photos = len(faces["name"]) > 0 and all(faces["photos"] != "")
    photos = photos and bool(np.isfinite(faces["boxes"]).all())
    if photos:
        for key in PHOTO_KEYS:
            arrays[key] = faces[key]
        seen = set(faces["photos"].tolist())
        known = gallery.photos()["photo"]
        arrays["photos_without_faces"] = np.array([p for p in known if p not in seen], dtype=str)
    if gallery.source is not None:
        arrays["source"] = np.array(gallery.source.to_json())
    with atomic_open(Path(path)) as f:
        np.savez(f, **arrays)
    return "a gallery of photos" if photos else "embeddings of face crops"
