"""Instance segmentations stored compactly: COCO polygons as flat arrays, RLE as bytes.

A COCO json holds each instance's mask as polygons (lists of ``x, y`` coordinates), as RLE with
compressed counts (a string) or as RLE with uncompressed counts (a list, as crowd regions are
written). :class:`InstanceMasks` keeps them in a few numpy arrays (no per-instance Python
objects, so a DataLoader worker receives a small pickle) and rasterizes one image's masks at
any scale with pycocotools, the rasterizer COCO's own evaluation uses.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from pycocotools import mask as mask_utils

NONE, POLYGONS, RLE = 0, 1, 2


class SegmentationError(ValueError):
    """A malformed COCO segmentation (named by its annotation)."""


@dataclass
class InstanceMasks:
    """The segmentations of ``M`` instances (one per box row of the annotations).

    Instance ``j`` is of kind ``kinds[j]``: ``NONE`` (no segmentation: its box stands for it),
    ``POLYGONS`` (polygons ``instance_polygons[j]:instance_polygons[j+1]``, polygon ``q`` being
    ``coords[polygon_offsets[q]:polygon_offsets[q+1]]`` = ``x0, y0, x1, y1, ...``) or ``RLE``
    (COCO's compressed counts ``rle_bytes[rle_offsets[j]:rle_offsets[j+1]]``, at the size of
    its image).
    """

    kinds: np.ndarray  # (M,) int8
    coords: np.ndarray  # (C,) float32
    polygon_offsets: np.ndarray  # (Q + 1,) int64
    instance_polygons: np.ndarray  # (M + 1,) int64
    rle_bytes: np.ndarray  # (B,) uint8
    rle_offsets: np.ndarray  # (M + 1,) int64

    def __len__(self) -> int:
        return len(self.kinds)

    @classmethod
    def empty(cls, num: int) -> InstanceMasks:
        """``num`` instances without segmentation."""
        return cls.build([None] * num, [], [])

    @classmethod
    def build(
        cls,
        segmentations: Sequence[list | dict | None],
        heights: Sequence[int] | np.ndarray,
        widths: Sequence[int] | np.ndarray,
        names: Sequence[object] | None = None,
        source: str = "",
    ) -> InstanceMasks:
        """From COCO ``segmentation`` values (polygons, RLE with compressed or uncompressed
        counts, or None) of instances whose images are ``heights[j] x widths[j]``. An RLE of
        another size, an odd polygon or an unknown form is an error naming the instance
        (``names[j]``, e.g. its annotation id)."""
        m = len(segmentations)
        kinds = np.zeros(m, np.int8)
        polygon_counts = np.zeros(m, np.int64)
        polygons: list[list[float]] = []
        rles: list[bytes] = [b""] * m

        def fail(j: int, what: str) -> SegmentationError:
            name = names[j] if names is not None else j
            where = f"{source}: " if source else ""
            return SegmentationError(f"{where}annotation {name}: {what}")

        for j, seg in enumerate(segmentations):
            if seg is None or (isinstance(seg, list) and not seg):
                continue
            if isinstance(seg, list):
                if not all(isinstance(p, list) for p in seg):
                    raise fail(j, "segmentation must be a list of polygons [[x0, y0, x1, ...]]")
                if any(len(p) % 2 for p in seg):
                    raise fail(j, "a polygon has an odd number of coordinates")
                kinds[j] = POLYGONS
                polygon_counts[j] = len(seg)
                polygons.extend(seg)
            elif isinstance(seg, dict) and "counts" in seg and "size" in seg:
                h, w = int(heights[j]), int(widths[j])
                if [int(v) for v in seg["size"]] != [h, w]:
                    raise fail(
                        j,
                        f"RLE size {list(seg['size'])} is not its image's (height, width) {[h, w]}",
                    )
                counts = seg["counts"]
                if isinstance(counts, list):  # uncompressed: pycocotools compresses it
                    if sum(counts) != h * w:
                        raise fail(j, f"uncompressed RLE counts sum to {sum(counts)}, not {h * w}")
                    counts = mask_utils.frPyObjects(seg, h, w)["counts"]
                kinds[j] = RLE
                rles[j] = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
            else:
                raise fail(j, f"unknown segmentation {type(seg).__name__}: polygons or RLE")
        lengths = np.fromiter(map(len, polygons), np.int64, count=len(polygons))
        coords = np.fromiter(
            itertools.chain.from_iterable(polygons), np.float32, count=int(lengths.sum())
        )
        rle_lengths = np.fromiter(map(len, rles), np.int64, count=m)
        return cls(
            kinds=kinds,
            coords=coords,
            polygon_offsets=_offsets(lengths),
            instance_polygons=_offsets(polygon_counts),
            rle_bytes=np.frombuffer(b"".join(rles), np.uint8).copy(),
            rle_offsets=_offsets(rle_lengths),
        )

    @classmethod
    def from_bitmasks(cls, masks: Sequence[np.ndarray]) -> InstanceMasks:
        """From ``(H, W)`` boolean masks (encoded as RLE)."""
        rles = []
        for m in masks:
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            rles.append({"size": rle["size"], "counts": rle["counts"].decode("ascii")})
        return cls.build(rles, [m.shape[0] for m in masks], [m.shape[1] for m in masks])

    def take(self, rows: np.ndarray) -> InstanceMasks:
        """The instances ``rows`` (an index array), in that order."""
        rows = np.asarray(rows, np.int64)
        first, last = self.instance_polygons[rows], self.instance_polygons[rows + 1]
        polys = _ranges(first, last)
        starts, stops = self.polygon_offsets[polys], self.polygon_offsets[polys + 1]
        rle_starts, rle_stops = self.rle_offsets[rows], self.rle_offsets[rows + 1]
        return InstanceMasks(
            kinds=self.kinds[rows],
            coords=self.coords[_ranges(starts, stops)],
            polygon_offsets=_offsets(stops - starts),
            instance_polygons=_offsets(last - first),
            rle_bytes=self.rle_bytes[_ranges(rle_starts, rle_stops)],
            rle_offsets=_offsets(rle_stops - rle_starts),
        )

    def polygons(self, j: int) -> list[np.ndarray]:
        """Instance ``j``'s polygons as ``(2k,)`` float32 arrays."""
        q0, q1 = self.instance_polygons[j], self.instance_polygons[j + 1]
        off = self.polygon_offsets
        return [self.coords[off[q] : off[q + 1]] for q in range(q0, q1)]

    def rle_counts(self, j: int) -> bytes:
        return self.rle_bytes[self.rle_offsets[j] : self.rle_offsets[j + 1]].tobytes()

    def segmentation(self, j: int, height: int, width: int) -> list | dict | None:
        """Instance ``j`` as a COCO ``segmentation`` (polygons, or RLE with compressed
        counts), or None."""
        if self.kinds[j] == POLYGONS:
            return [[float(v) for v in p] for p in self.polygons(j)]
        if self.kinds[j] == RLE:
            return {"size": [int(height), int(width)], "counts": self.rle_counts(j).decode()}
        return None

    def rasterize(
        self,
        rows: Sequence[int] | np.ndarray,
        boxes: np.ndarray,
        size: tuple[int, int],
        scaled: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """``(len(rows), H', W')`` uint8 masks of the instances ``rows`` of an image of ``size``
        (height, width), drawn at ``scaled`` (default: ``size``). Polygons are scaled and
        drawn at the new size (exact, as COCO draws them); RLEs are decoded and resized
        (nearest); an instance without segmentation is its box (``boxes``, xyxy at ``size``)."""
        h, w = size
        sh, sw = scaled or size
        sx, sy = sw / w, sh / h
        out = np.zeros((len(rows), sh, sw), np.uint8)
        for k, j in enumerate(rows):
            kind = self.kinds[j]
            if kind == POLYGONS:
                polys = [
                    (p.reshape(-1, 2) * np.array([sx, sy], np.float64)).reshape(-1).tolist()
                    for p in self.polygons(j)
                ]
                if polys:
                    rle = mask_utils.merge(mask_utils.frPyObjects(polys, sh, sw))
                    out[k] = mask_utils.decode(rle)
            elif kind == RLE:
                mask = mask_utils.decode({"size": [h, w], "counts": self.rle_counts(j)})
                if (sh, sw) != (h, w):
                    mask = cv2.resize(mask, (sw, sh), interpolation=cv2.INTER_NEAREST_EXACT)
                out[k] = mask
            else:
                x1, y1, x2, y2 = boxes[k] * np.array([sx, sy, sx, sy])
                out[
                    k, int(np.floor(y1)) : int(np.ceil(y2)), int(np.floor(x1)) : int(np.ceil(x2))
                ] = 1
        return out


def _offsets(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """The concatenated ``arange(start, stop)`` of each pair, without a Python loop."""
    lengths = (stops - starts).astype(np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    shift = np.repeat(starts - _offsets(lengths)[:-1], lengths)
    return np.arange(total, dtype=np.int64) + shift
