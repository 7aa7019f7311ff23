"""The IJB embedding pass on CUDA (pinned batches from decoding workers) gives the CPU's features
and figures. Skipped without CUDA; run on a GPU machine with ``pytest tests/gpu``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_ijb_features_on_cuda_match_cpu(tmp_path):
    from resvision.datasets.face.ijb import read_ijb_meta
    from resvision.heads.embedding import EmbeddingModelConfig, build_embedding_model
    from resvision.tasks.face.ijb import embed_aligned, evaluate_ijb
    from resvision.tasks.face.inference import Embedder

    from ..tasks.face.ijb_generated import generate, write_ijb_folder

    protocol = generate(gallery_templates=(4, 4), probe_templates=24, images=80, dim=4, seed=2)
    names = write_ijb_folder(tmp_path, protocol)
    (tmp_path / "loose_crop" / names[7]).unlink()
    meta = read_ijb_meta(tmp_path, "IJBC")
    torch.manual_seed(0)
    model = build_embedding_model(EmbeddingModelConfig("iresnet18", embedding_size=128))
    features = {}
    for name, device, workers in (("cpu", "cpu", 0), ("cuda", "cuda", 2)):
        embedder = Embedder(model, 112, device=device)
        features[name], skipped = embed_aligned(
            embedder, meta.image_paths(), meta.landmarks, batch_size=16, workers=workers
        )
        assert skipped == [7]
    cpu, cuda = features["cpu"], features["cuda"]
    assert np.array_equal(np.isnan(cpu), np.isnan(cuda))
    ok = ~np.isnan(cpu).any(1)
    assert np.abs(cuda[ok] - cpu[ok]).max() <= 1e-4 * np.abs(cpu[ok]).max()
    a, b = evaluate_ijb(meta, cpu).metrics, evaluate_ijb(meta, cuda).metrics
    for key, value in a.items():  # one pair's worth at most (scores equal to ~1e-5)
        assert b[key] == pytest.approx(value, abs=1 / 24 + 1e-9), key
