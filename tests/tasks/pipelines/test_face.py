"""The photos -> faces -> embeddings pipeline: each kept face is the embedding of its norm_crop
alignment; a photo without faces gives none; faces that cannot be aligned are named and
skipped; score, size and largest-only selection."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from resvision.datasets.face import ARCFACE_TEMPLATE
from resvision.heads.embedding import EmbeddingModelConfig, build_embedding_model
from resvision.tasks.face.inference import Embedder
from resvision.tasks.pipelines.face import FaceGallery, FacePipeline


def _face(x: float, y: float, side: float, score: float) -> tuple:
    """A face box at (x, y) with the ArcFace template's landmarks scaled into it."""
    points = np.array([x, y]) + ARCFACE_TEMPLATE / 112 * side
    return [x, y, x + side, y + side], score, points


class FixedDetector:
    """Returns the same faces for every photo (a stand-in for a trained detector)."""

    def __init__(self, faces) -> None:
        self.faces = faces

    def detect(self, images, *, batch_size=8):
        boxes = np.array([f[0] for f in self.faces], np.float32).reshape(-1, 4)
        scores = np.array([f[1] for f in self.faces], np.float32)
        points = np.array([f[2] for f in self.faces], np.float32).reshape(-1, 5, 2)
        return [{"boxes": boxes, "scores": scores, "landmarks": points} for _ in images]


@pytest.fixture(scope="module")
def embedder():
    torch.manual_seed(0)
    cfg = EmbeddingModelConfig(backbone="iresnet18", embedding_size=32, input_size=32)
    return Embedder(build_embedding_model(cfg).eval(), 32)


def _photos(count: int = 2):
    rng = np.random.default_rng(0)
    return [(rng.random((96, 128, 3)) * 255).astype(np.uint8) for _ in range(count)]


def test_each_face_is_its_aligned_embedding(embedder):
    """The pipeline embeds every face of every photo in one batch (4 here, 2 in the direct
    call): other batch shapes may take other kernels, 6e-7 of the largest value apart
    (measured with 1 and 2 threads and ATen's native convolutions), so the bound, relative to
    that value, keeps 150x of headroom. The mirrored crop's embedding not added (flip off)
    moves the embeddings by 0.8."""
    faces = [_face(10, 10, 60, 0.9), _face(70, 20, 40, 0.8)]
    pipe = FacePipeline(FixedDetector(faces), embedder)
    photos = _photos()
    found = pipe(photos)
    for photo, r in zip(photos, found):
        assert r.boxes.shape == (2, 4) and r.embeddings.shape == (2, 32) and not r.skipped
        direct = embedder.embed([photo, photo], landmarks=[f[2] for f in faces])
        error = float(np.abs(r.embeddings - direct).max() / np.abs(direct).max())
        assert error < 1e-4, error
        np.testing.assert_allclose(np.linalg.norm(r.embeddings, axis=1), 1, atol=1e-5)


def test_a_photo_without_faces_gives_none(embedder):
    (r,) = FacePipeline(FixedDetector([]), embedder)(_photos(1))
    assert r.boxes.shape == (0, 4) and r.embeddings.shape == (0, 32) and not r.skipped


def test_a_face_too_small_to_align_is_named_and_skipped(embedder, caplog):
    faces = [_face(10, 10, 60, 0.9), _face(80, 60, 4, 0.95)]  # eyes 1.3 px apart
    caplog.set_level(logging.WARNING)
    (r,) = FacePipeline(FixedDetector(faces), embedder)(_photos(1), names=["party.jpg"])
    assert len(r.boxes) == 1 and r.boxes[0, 2] == 70
    assert len(r.skipped) == 1 and "party.jpg: face at [80, 60, 84, 64]" in r.skipped[0]
    assert "too small to align" in r.skipped[0] and "party.jpg" in caplog.text


def test_score_size_and_largest_face_selection(embedder):
    faces = [_face(10, 10, 30, 0.9), _face(50, 10, 70, 0.6), _face(5, 60, 20, 0.3)]
    detector = FixedDetector(faces)
    (r,) = FacePipeline(detector, embedder, score_threshold=0.5)(_photos(1))
    assert len(r.boxes) == 2
    (r,) = FacePipeline(detector, embedder, score_threshold=0.0, min_face_size=25)(_photos(1))
    assert len(r.boxes) == 2 and r.below_min_size == 1
    (r,) = FacePipeline(detector, embedder, score_threshold=0.0, largest_face_only=True)(_photos(1))
    assert r.boxes.tolist() == [[50, 10, 120, 80]]


def test_gallery_round_trip(tmp_path, embedder):
    faces = [_face(10, 10, 60, 0.9)]
    (r,) = FacePipeline(FixedDetector(faces), embedder)(_photos(1))
    gallery = FaceGallery(
        photos=np.array(["alice/1.jpg"]),
        paths=np.array(["/x/alice/1.jpg"]),
        face_index=np.array([0]),
        boxes=r.boxes,
        scores=r.scores,
        landmarks=r.landmarks,
        embeddings=r.embeddings,
        photos_without_faces=np.array(["empty.jpg"]),
    )
    gallery.save(tmp_path / "g.npz")
    data = np.load(tmp_path / "g.npz")
    assert data["names"].tolist() == ["alice/1.jpg#0"] and data["labels"].tolist() == ["alice"]
    back = FaceGallery.from_npz(data)
    assert np.array_equal(back.embeddings, gallery.embeddings)  # exact: saved and loaded back
    assert back.photos_without_faces.tolist() == ["empty.jpg"]
