"""Photos -> faces -> embeddings: a face detector and a face-embedding model in one pipeline.

Every face a detector finds is aligned from its five landmarks with the same ``norm_crop`` as
the embedding model's training data, then embedded. A photo without faces gives none (not an
error); a face whose landmarks are too close together to align (eyes under
``min_eye_distance`` pixels apart, or all points at one place) is named and skipped.

This module combines two task packages (face detection, face embeddings); it is not a task
itself, so it is the one place allowed to import both.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resvision.datasets.images import ImageInput, as_image_list, image_to_array
from resvision.datasets.inputs import InputImage
from resvision.tasks.engine.bulk import BulkJob, Entry, LoadedBatch, image_batches
from resvision.tasks.face.bulk import faces_writer
from resvision.tasks.face.gallery.source import EmbeddingSource
from resvision.tasks.face.gallery.writer import GalleryOutput, photo_name
from resvision.tasks.face.inference import Embedder
from resvision.tasks.face_detection.inference import FaceDetector

log = logging.getLogger(__name__)

EMBED_BATCH = 64  # faces per pass of the embedding model
MIN_EYE_DISTANCE = 3.0  # pixels: closer eyes cannot be aligned to a 112 px crop meaningfully


@dataclass
class FaceGallery:
    """Faces found in photos: one row per face (``F`` faces, ``D``-d embeddings).

    ``names`` (``photo#k``) and ``embeddings`` are what ``face search`` / ``face cluster``
    read; ``labels`` name a face's person: the photo's folder for photos in sub-folders
    (``alice/1.jpg`` -> ``alice``), else the photo's name without extension.
    """

    photos: np.ndarray  # (F,) relative photo names
    paths: np.ndarray  # (F,) the photo files (absolute), for drawing later
    face_index: np.ndarray  # (F,) k of the k-th face kept in its photo
    boxes: np.ndarray  # (F, 4) float32 xyxy
    scores: np.ndarray  # (F,) float32
    landmarks: np.ndarray  # (F, 5, 2) float32
    embeddings: np.ndarray  # (F, D) float32, unit length
    photos_without_faces: np.ndarray = field(default_factory=lambda: np.zeros(0, str))
    source: str = ""  # what made the embeddings (EmbeddingSource JSON), "" when unknown

    def __len__(self) -> int:
        return len(self.photos)

    @property
    def names(self) -> np.ndarray:
        return np.array([f"{p}#{k}" for p, k in zip(self.photos, self.face_index)], dtype=str)

    @property
    def labels(self) -> np.ndarray:
        return np.array([person_label(p) for p in self.photos], dtype=str)

    def save(self, path: str | os.PathLike) -> Path:
        np.savez(
            path,
            embeddings=self.embeddings,
            names=self.names,
            labels=self.labels,
            photos=self.photos,
            paths=self.paths,
            face_index=self.face_index,
            boxes=self.boxes,
            scores=self.scores,
            landmarks=self.landmarks,
            photos_without_faces=self.photos_without_faces,
            **({"source": np.array(self.source)} if self.source else {}),
        )
        return Path(path)

    @classmethod
    def from_npz(cls, data) -> FaceGallery:
        """From a loaded .npz written by :meth:`save` (``KeyError`` when it is not one)."""
        return cls(
            photos=data["photos"],
            paths=data["paths"],
            face_index=data["face_index"],
            boxes=data["boxes"],
            scores=data["scores"],
            landmarks=data["landmarks"],
            embeddings=data["embeddings"].astype(np.float32),
            photos_without_faces=data["photos_without_faces"],
            source=str(data["source"]) if "source" in data else "",
        )


def load_rgb_array(image: ImageInput, extra: object = None) -> np.ndarray:
    """An ``(H, W, 3)`` RGB array of any image input (the bulk path's loader signature)."""
    return image_to_array(image)


def person_label(photo: str) -> str:
    """``alice/1.jpg`` -> ``alice``; ``bob.jpg`` -> ``bob``."""
    p = Path(photo)
    return p.parent.name if p.parent.name else p.stem


def alignment_problem(landmarks: np.ndarray, min_eye_distance: float) -> str | None:
    """Why five landmarks cannot be aligned (None when they can)."""
    points = np.asarray(landmarks, np.float64).reshape(5, 2)
    if not np.isfinite(points).all():
        return "landmarks are not finite"
    eyes = float(np.linalg.norm(points[1] - points[0]))
    if eyes < min_eye_distance:
        return f"too small to align: eyes {eyes:.1f} px apart (at least {min_eye_distance:g})"
    if np.linalg.matrix_rank(points - points.mean(0)) < 2:
        return "too small to align: the landmarks lie on a line"
    return None


@dataclass
class PhotoFaces:
    """What the pipeline found in one photo (``K`` faces kept)."""

    boxes: np.ndarray  # (K, 4)
    scores: np.ndarray  # (K,)
    landmarks: np.ndarray  # (K, 5, 2)
    embeddings: np.ndarray  # (K, D)
    skipped: list[str]  # faces that could not be aligned, each with its box and the reason
    below_min_size: int = 0  # faces left out by min_face_size


class FacePipeline:
    """Detect faces, align each with ``norm_crop``, embed them.

    >>> pipe = FacePipeline.from_checkpoints("runs/face_det", "runs/face")  # doctest: +SKIP
    >>> found = pipe(["group.jpg"])  # doctest: +SKIP
    >>> found[0].boxes, found[0].embeddings  # (K, 4), (K, D) unit length
    """

    def __init__(
        self,
        detector: FaceDetector,
        embedder: Embedder,
        *,
        score_threshold: float = 0.5,
        min_face_size: float = 0.0,
        largest_face_only: bool = False,
        min_eye_distance: float = MIN_EYE_DISTANCE,
        flip: bool = True,
    ) -> None:
        self.detector = detector
        self.embedder = embedder
        self.score_threshold = score_threshold
        self.min_face_size = min_face_size
        self.largest_face_only = largest_face_only
        self.min_eye_distance = min_eye_distance
        self.flip = flip

    @classmethod
    def from_checkpoints(
        cls,
        detector: str | os.PathLike,
        embedder: str | os.PathLike,
        *,
        device: str = "auto",
        **options,
    ) -> FacePipeline:
        """A face-detection run (or the PyTorch port's ``Resnet50_Final.pth``) and a face
        run; ``options`` are :class:`FacePipeline`'s."""
        return cls(
            FaceDetector.from_checkpoint(detector, device=device),
            Embedder.from_checkpoint(embedder, device=device),
            **options,
        )

    def select(self, found: dict[str, np.ndarray]) -> tuple[np.ndarray, int]:
        """Indices of the faces kept (score, minimum size, largest only) and how many were
        left out for their size."""
        boxes, scores = found["boxes"], found["scores"]
        keep = scores >= self.score_threshold
        side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        small = keep & (side < self.min_face_size)
        keep &= ~small
        index = np.flatnonzero(keep)
        if self.largest_face_only and len(index) > 1:
            area = (boxes[index, 2] - boxes[index, 0]) * (boxes[index, 3] - boxes[index, 1])
            index = index[[int(np.argmax(area))]]
        return index, int(small.sum())

    def __call__(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        names: Sequence[str] | None = None,
        batch_size: int = 8,
        workers: int = 0,
    ) -> list[PhotoFaces]:
        """The faces of each image (paths, RGB arrays, PIL images or tensors); ``names`` are
        used in the messages about skipped faces (default: the image's position). Photos go
        ``batch_size`` at a time through the detector, then their faces through the embedding
        model; files are read a few batches ahead, by ``workers`` processes when given."""
        images = as_image_list(images)
        names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
        results: list[PhotoFaces] = []
        for photos in image_batches(images, batch_size, load=load_rgb_array, workers=workers):
            results += self._photo_faces(photos, names[len(results) : len(results) + len(photos)])
        return results

    def _photo_faces(self, photos: list[np.ndarray], names: list[str]) -> list[PhotoFaces]:
        """Detect, select, align and embed the faces of one batch of RGB photos."""
        detections = self.detector.detect(photos, batch_size=len(photos))
        pending: list[tuple[int, int]] = []  # (photo, face) to embed
        results = []
        for p, (found, name) in enumerate(zip(detections, names)):
            index, small = self.select(found)
            aligned, skipped = [], []
            for k in index:
                problem = alignment_problem(found["landmarks"][k], self.min_eye_distance)
                if problem is None:
                    aligned.append(int(k))
                    continue
                box = ", ".join(f"{v:.0f}" for v in found["boxes"][k])
                skipped.append(
                    f"{name}: face at [{box}] (score {found['scores'][k]:.2f}) {problem}"
                )
            for message in skipped:
                log.warning("skipped %s", message)
            results.append(
                PhotoFaces(
                    boxes=found["boxes"][aligned],
                    scores=found["scores"][aligned],
                    landmarks=found["landmarks"][aligned],
                    embeddings=np.zeros((0, self.embedder.model.embedding_size), np.float32),
                    skipped=skipped,
                    below_min_size=small,
                )
            )
            pending += [(p, k) for k in range(len(aligned))]
        if pending:
            vectors = self.embedder.embed(
                [photos[p] for p, _ in pending],
                landmarks=[results[p].landmarks[k] for p, k in pending],
                flip=self.flip,
                batch_size=EMBED_BATCH,
            )
            owner = np.array([p for p, _ in pending])
            for p, r in enumerate(results):
                r.embeddings = vectors[owner == p]
        return results


class FaceGalleryBulk(BulkJob):
    """``face embed PHOTOS --detector RUN`` over a collection: every face of every photo found,
    aligned and embedded, into a gallery ``.npz`` (:class:`FaceGallery`'s layout) assembled
    from the engine's parts, or into a face gallery (a :class:`GalleryOutput`: photos named by
    :func:`photo_name`, those without a face remembered by their file). Detectors pad a
    batch to its largest photo, so photos of similar shape are batched together."""

    group_by_aspect = True

    def __init__(
        self,
        pipeline: FacePipeline,
        out: Path | GalleryOutput,
        *,
        depends_on: dict[str, Any],
        source: EmbeddingSource | None = None,
    ) -> None:
        super().__init__(depends_on)
        self.pipeline, self.source = pipeline, source
        self.out = out if isinstance(out, GalleryOutput) else Path(out)

    def process(self, batch: LoadedBatch, inputs: Sequence[InputImage]) -> list[Entry]:
        readable = batch.readable()
        entries = {}
        found = self.pipeline(
            [rgb.numpy() for _, rgb in readable],
            names=[inputs[i].name for i, _ in readable],
            batch_size=max(1, len(readable)),
        )
        for (i, _), r in zip(readable, found):
            arrays = {
                "boxes": r.boxes.astype(np.float32).reshape(-1, 4),
                "scores": r.scores.astype(np.float32),
                "landmarks": r.landmarks.astype(np.float32).reshape(-1, 5, 2),
                "embeddings": r.embeddings.astype(np.float32),
            }
            record = {"unaligned": r.skipped, "below_min_size": r.below_min_size}
            entries[i] = Entry(i, record, arrays)
        return batch.entries(entries)

    def assemble(self, entries: Iterator[tuple[InputImage, Entry]]) -> dict[str, Any]:
        size = self.pipeline.embedder.model.embedding_size
        report = {"photos": 0, "faces": 0, "without_faces": 0, "unaligned": 0, "below_min_size": 0}
        gallery = isinstance(self.out, GalleryOutput)
        with faces_writer(self.out, size, self.source) as writer:
            for key, dtype, shape in (
                ("embeddings", np.float32, (size,)),
                ("names", str, ()),
                ("labels", str, ()),
                ("photos", str, ()),
                ("paths", str, ()),
                ("face_index", np.int64, ()),
                ("boxes", np.float32, (4,)),
                ("scores", np.float32, ()),
                ("landmarks", np.float32, (5, 2)),
                ("photos_without_faces", str, ()),
            ):
                writer.declare(key, dtype, shape)
            for item, entry in entries:
                k = len(entry.arrays["scores"])
                report["photos"] += 1
                report["faces"] += k
                report["unaligned"] += len(entry.record["unaligned"])
                report["below_min_size"] += entry.record["below_min_size"]
                photo = photo_name(item.name, item.path) if gallery else item.name
                path = str(item.path.resolve())
                if not k:
                    report["without_faces"] += 1
                    writer.append(
                        photos_without_faces=[photo],
                        **({"paths_without_faces": [path]} if gallery else {}),
                    )
                    continue
                writer.append(
                    embeddings=entry.arrays["embeddings"],
                    names=[f"{photo}#{j}" for j in range(k)],
                    labels=[person_label(item.name)] * k,
                    photos=[photo] * k,
                    paths=[path] * k,
                    face_index=np.arange(k),
                    boxes=entry.arrays["boxes"],
                    scores=entry.arrays["scores"],
                    landmarks=entry.arrays["landmarks"],
                )
            if not report["photos"]:
                writer.discard()
        return report | {"dimension": size} | ({"gallery_size": writer.size} if gallery else {})
