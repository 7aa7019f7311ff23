"""The embedding pipeline users run: embed, search, cluster."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from resvision.datasets.face import align_crop, resize_square
from resvision.datasets.images import ImageInput, as_image_list, image_to_array
from resvision.heads.embedding import EmbeddingModel
from resvision.tasks.engine.bulk import image_batches
from resvision.tasks.engine.runtime import autocast

from .model import load_model


def face_crop(image: np.ndarray, landmarks: np.ndarray | None, image_size: int) -> np.ndarray:
    """An ``(S, S, 3)`` uint8 crop of an RGB image: aligned with :func:`norm_crop` from five
    landmarks when given (at 112 px, or ``S`` when it is a multiple of 112), then resized to
    ``S``; without landmarks the (already aligned) image resized."""
    if landmarks is not None:
        return align_crop(image, landmarks, image_size)
    return resize_square(np.ascontiguousarray(image).astype(np.uint8), image_size)


def read_face_crop(
    image: ImageInput, landmarks: np.ndarray | None, *, image_size: int
) -> torch.Tensor:
    """:func:`face_crop` of an image (a file, an array...) as an ``(S, S, 3)`` uint8 tensor
    (what the bulk path's workers hand over)."""
    return torch.from_numpy(face_crop(image_to_array(image), landmarks, image_size))


def save_embeddings(path: str | os.PathLike, embeddings: np.ndarray, names: Sequence[str]) -> Path:
    """The embeddings file of ``face embed``: an ``.npz`` with ``embeddings (N, D)`` float32
    unit length and ``names (N,)`` (the inputs' relative paths)."""
    np.savez(path, embeddings=np.asarray(embeddings, np.float32), names=np.asarray(names, str))
    return Path(path)


def load_embeddings(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(embeddings (N, D) float32, names (N,))`` of an ``.npz`` written by ``face embed``
    (a file of face crops' embeddings, or a gallery of photos)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"embedding file {str(path)!r} does not exist (write one with `resvision face embed`)"
        )
    not_embeddings = ValueError(
        f"{str(path)!r} is not an embedding file: give an .npz written by `resvision face embed` "
        "(arrays 'embeddings' and 'names')"
    )
    try:
        data = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError):
        raise not_embeddings from None
    if not hasattr(data, "files") or "embeddings" not in data or "names" not in data:
        raise not_embeddings
    return data["embeddings"].astype(np.float32), data["names"]


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
        model, cfg, _ = load_model(path, device=device, overrides=overrides)
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
        return face_crop(image_to_array(image), landmarks, self.image_size)

    @torch.no_grad()
    def embed_crops(
        self, crops: torch.Tensor | np.ndarray, *, flip: bool = True, normalize: bool = True
    ) -> np.ndarray:
        """``crops: (N, S, S, 3)`` uint8 (:meth:`prepare`'s) -> ``(N, D)`` float32 embeddings,
        unit-length unless not ``normalize``."""
        x = torch.as_tensor(crops).permute(0, 3, 1, 2).to(self.device, non_blocking=True)
        with autocast(self.device, self.amp):
            out = self.model.embed(x, flip=flip, normalize=normalize)
        return out.float().cpu().numpy()

    @torch.no_grad()
    def embed(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        landmarks: Sequence[np.ndarray | None] | None = None,
        flip: bool = True,
        batch_size: int = 64,
        workers: int = 0,
        normalize: bool = True,
    ) -> np.ndarray:
        """``(N, D)`` unit-length embeddings of face images (paths, RGB arrays, PIL images or
        tensors; aligned crops, or photos with ``landmarks`` to align them); ``flip`` adds the
        mirrored image's embedding before normalizing (``normalize=False`` keeps its length).
        Files are read and aligned a few batches ahead, by ``workers`` processes when given."""
        images = as_image_list(images)
        load = functools.partial(read_face_crop, image_size=self.image_size)
        out = [
            self.embed_crops(torch.stack(crops), flip=flip, normalize=normalize)
            for crops in image_batches(
                images, batch_size, load=load, workers=workers, extras=landmarks
            )
        ]
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
