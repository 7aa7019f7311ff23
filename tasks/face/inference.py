"""The embedding pipeline users run: embed, search, cluster."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from resvision.datasets.face import norm_crop, resize_square
from resvision.datasets.images import ImageInput, as_image_list, image_to_array
from resvision.heads.embedding import EmbeddingModel
from resvision.tasks.engine.runtime import autocast

from .model import load_model


class Embedder:
    """L2-normalized face embeddings from a trained checkpoint.

    >>> emb = Embedder.from_checkpoint("runs/face/iresnet18_synthetic")  # doctest: +SKIP
    >>> vectors = emb.embed(["a.jpg", "b.jpg"])  # (2, D) float32, unit length
    """

    def __init__(
        self,
        model: EmbeddingModel,
        image_size: int,
        *,
        device: str | torch.device = "cpu",
        amp: str = "off",
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.image_size = image_size
        self.amp = amp

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, *, device: str = "auto", overrides: Sequence[str] = ()
    ) -> Embedder:
        """A run folder (its ``best.pt``, else ``last.pt``) or a checkpoint file."""
        model, cfg = load_model(path, device=device, overrides=overrides)
        return cls(
            model, cfg.data.image_size, device=next(model.parameters()).device, amp=cfg.runtime.amp
        )

    @property
    def fingerprint(self) -> str:
        """What identifies these weights (a face gallery refuses to mix embeddings of two):
        ``"{D}-d {S}px sha256:{hash}"``, the hash of every tensor of the model in order."""
        import hashlib

        digest = hashlib.sha256()
        for name, tensor in self.model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        size = self.model.embedding_size
        return f"{size}-d {self.image_size}px sha256:{digest.hexdigest()[:16]}"

    def prepare(self, image: ImageInput, landmarks: np.ndarray | None = None) -> np.ndarray:
        """An ``(S, S, 3)`` uint8 crop: aligned with :func:`norm_crop` when landmarks are given,
        else the (already aligned) image resized."""
        image = image_to_array(image)
        if landmarks is not None:
            align = 112 if self.image_size % 112 else self.image_size
            image = norm_crop(image, landmarks, align)
        return resize_square(np.ascontiguousarray(image).astype(np.uint8), self.image_size)

    @torch.no_grad()
    def embed(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        landmarks: Sequence[np.ndarray | None] | None = None,
        flip: bool = True,
        batch_size: int = 64,
    ) -> np.ndarray:
        """``(N, D)`` unit-length embeddings of face images (paths, RGB arrays, PIL images or
        tensors; aligned crops, or photos with ``landmarks`` to align them); ``flip`` adds the
        mirrored image's embedding before normalizing."""
        images = as_image_list(images)
        landmarks = landmarks if landmarks is not None else [None] * len(images)
        out = []
        for start in range(0, len(images), batch_size):
            crops = [
                self.prepare(img, lm)
                for img, lm in zip(
                    images[start : start + batch_size], landmarks[start : start + batch_size]
                )
            ]
            x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).to(self.device)
            with autocast(self.device, self.amp):
                out.append(self.model.embed(x, flip=flip).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.embedding_size), np.float32)

    def predict(
        self, images: ImageInput | Sequence[ImageInput], *, batch_size: int = 64, **kwargs
    ) -> np.ndarray:
        """The same as :meth:`embed` (the name every predictor shares)."""
        return self.embed(images, batch_size=batch_size, **kwargs)


def search(gallery: np.ndarray, query: np.ndarray, top_k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Inner-product search (cosine on unit vectors) with faiss: ``(scores, indices)``, each
    ``(Q, k)``, best first."""
    import faiss

    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(np.ascontiguousarray(gallery, np.float32))
    return index.search(np.ascontiguousarray(query, np.float32), min(top_k, len(gallery)))


def cluster(
    embeddings: np.ndarray, threshold: float, *, method: str = "threshold", k: int = 32
) -> np.ndarray:
    """A cluster id per embedding (clusters numbered by first appearance) from the exact
    ``k``-nearest-neighbour graph: ``threshold`` linkage (connected components of the links
    ``cosine > threshold``: the all-pairs partition wherever ``k`` covers every such link)
    or ``chinese-whispers``; see :mod:`.clustering` (and ``Gallery.cluster`` for galleries
    too large for an exact graph)."""
    from .clustering import cluster_graph, exact_knn

    scores, neighbours = exact_knn(embeddings, min(k, max(len(embeddings) - 1, 0)))
    return cluster_graph(scores, neighbours, threshold, method)
