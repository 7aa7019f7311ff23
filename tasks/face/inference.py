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
        normalize: bool = True,
    ) -> np.ndarray:
        """``(N, D)`` unit-length embeddings of face images (paths, RGB arrays, PIL images or
        tensors; aligned crops, or photos with ``landmarks`` to align them); ``flip`` adds the
        mirrored image's embedding before normalizing; ``normalize=False`` keeps its length."""
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
            x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)
            out.append(self.embed_crops(x, flip=flip, normalize=normalize))
        return np.concatenate(out) if out else np.zeros((0, self.model.embedding_size), np.float32)

    @torch.no_grad()
    def embed_crops(
        self, crops: torch.Tensor, *, flip: bool = True, normalize: bool = True
    ) -> np.ndarray:
        """``(B, D)`` float32 embeddings of a batch of aligned crops ``(B, 3, S, S)`` in
        [0, 255] at ``image_size`` (what :meth:`embed` runs after preparing the images)."""
        with autocast(self.device, self.amp):
            out = self.model.embed(crops.to(self.device), flip=flip, normalize=normalize)
        return out.float().cpu().numpy()

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


def cluster(embeddings: np.ndarray, threshold: float) -> np.ndarray:
    """Connected components of the graph "cosine >= threshold" (faiss range search); returns a
    cluster id per embedding, clusters numbered by first appearance."""
    import faiss

    x = np.ascontiguousarray(embeddings, np.float32)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    lims, _, neighbours = index.range_search(x, float(threshold))
    parent = np.arange(len(x))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(x)):
        for j in neighbours[lims[i] : lims[i + 1]]:
            a, b = find(i), find(int(j))
            if a != b:
                parent[max(a, b)] = min(a, b)
    roots = np.array([find(i) for i in range(len(x))])
    _, ids = np.unique(roots, return_inverse=True)
    order = {}
    return np.array([order.setdefault(r, len(order)) for r in ids])
