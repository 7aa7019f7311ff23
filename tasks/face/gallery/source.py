"""What a gallery records about its faces: which model made the embeddings, and the metadata a
face may carry (shared by the gallery and its .npz reader)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

# metadata a face may carry: name -> (dtype, shape of one face's value)
METADATA = {
    "photos": (str, ()),
    "paths": (str, ()),
    "face_index": (np.int64, ()),
    "boxes": (np.float32, (4,)),
    "scores": (np.float32, ()),
    "landmarks": (np.float32, (5, 2)),
}

# photos looked at that hold no face (recorded so that they are skipped next time)
BATCH_METADATA = ("photos_without_faces", "paths_without_faces")


@dataclass(frozen=True)
class EmbeddingSource:
    """What made a gallery's embeddings; faces of different sources are never mixed.

    ``model`` identifies the weights (``Embedder.fingerprint``: a hash of the model's
    tensors), ``alignment`` how faces were cropped (``norm_crop``: aligned from five landmarks,
    given or detected; ``none``: images used as given, already aligned crops), ``flip``
    whether the mirrored crop's embedding was added."""

    model: str
    alignment: str
    flip: bool

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> EmbeddingSource | None:
        if not text:
            return None
        try:
            return cls(**json.loads(text))
        except (TypeError, ValueError):
            raise ValueError(f"not an embedding source: {text!r}") from None

    def describe(self) -> str:
        return (
            f"model {self.model}, alignment {self.alignment}, flip {'on' if self.flip else 'off'}"
        )
