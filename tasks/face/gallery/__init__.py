"""Face galleries that scale: embeddings with their metadata on disk (or on a Milvus server),
exact or approximate search, atomic incremental updates, clustering from the k-nearest-neighbour
graph. ``Gallery.create(path, dim)`` / ``Gallery.open(path)``; see :mod:`.base` for the API,
:mod:`.local` for the embedded storage, :mod:`.ann` for the search, :mod:`.milvus` for Milvus."""

from .ann import EXACT_BELOW, IndexPlan
from .base import Gallery, Transaction
from .npz import read_npz
from .source import EmbeddingSource

__all__ = ["EXACT_BELOW", "EmbeddingSource", "Gallery", "IndexPlan", "Transaction", "read_npz"]
