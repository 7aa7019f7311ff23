"""The compact container that detection and face detection keep their annotations in.

Per image: its file name, id and size; per box: its row in flat numpy arrays, image ``i``
owning rows ``offsets[i]:offsets[i+1]``. A DataLoader worker receives a few arrays (a small
pickle) instead of per-image Python dicts, and nothing grows copy-on-write pages. Each task's
annotations add their own per-box arrays (labels and masks; landmarks) to these fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def offsets_of(counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """``(N + 1,)`` int64 row offsets of images holding ``counts[i]`` boxes each."""
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


@dataclass
class BoxAnnotations:
    """Every image's boxes in flat arrays; image ``i`` owns rows ``offsets[i]:offsets[i+1]``."""

    file_names: np.ndarray  # (N,) bytes, relative to the image root
    image_ids: np.ndarray  # (N,) int64, the source's ids
    heights: np.ndarray  # (N,) int32; 0 where the source does not say
    widths: np.ndarray  # (N,) int32
    offsets: np.ndarray  # (N + 1,) int64
    boxes: np.ndarray  # (M, 4) float32 xyxy

    def __len__(self) -> int:
        return len(self.image_ids)

    def file_name(self, i: int) -> str:
        return self.file_names[i].decode("utf-8")

    def rows(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    @property
    def num_boxes(self) -> int:
        return len(self.boxes)
