"""The verification protocol: sklearn's fold order, and identical numbers to InsightFace's loop."""

from __future__ import annotations

import numpy as np
import pytest

from resvision.tasks.face.evaluation import embedding_pairs, evaluate_embeddings, kfold

from .insightface_reference import reference_evaluate


def test_kfold_matches_sklearn_order():
    folds = kfold(23, 10)
    assert [len(t) for _, t in folds] == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    assert folds[0][1].tolist() == [0, 1, 2] and 0 not in folds[0][0]


def test_vectorized_protocol_equals_the_per_threshold_loop():
    rng = np.random.default_rng(3)
    pairs, dim = 1200, 64
    base = rng.normal(size=(pairs, dim))
    issame = rng.random(pairs) < 0.5
    a = base + 0.9 * rng.normal(size=(pairs, dim))
    b = np.where(issame[:, None], base, rng.normal(size=(pairs, dim))) + 0.9 * rng.normal(
        size=(pairs, dim)
    )
    emb = np.empty((2 * pairs, dim))
    emb[0::2], emb[1::2] = a, b
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ours, ref = evaluate_embeddings(emb, issame), reference_evaluate(emb, issame)
    for key, value in ref.items():
        assert ours[key] == value, key
    assert 0.6 < ours["acc"] < 0.999 and 0 < ours["val@far1e-3"] < 1
    assert 0.5 < ours["auc"] <= 1 and ours["tar@far1e-1"] >= ours["tar@far1e-2"]
    assert ours["threshold_l2@far1e-2"] == pytest.approx(2 - 2 * ours["threshold_cos@far1e-2"])


def test_pairs_are_every_same_person_pair_and_a_sample_of_the_rest():
    labels = np.array(list("abacbaddc"))
    first, second, same = embedding_pairs(labels, max_negatives=10)
    assert np.array_equal(same, labels[first] == labels[second])
    assert (first < second).all()
    assert len(set(zip(first.tolist(), second.tolist()))) == first.size  # no pair twice
    groups = {c: int((labels == c).sum()) for c in set(labels)}
    assert same.sum() == sum(k * (k - 1) // 2 for k in groups.values())  # all of them
    assert (~same).sum() == 10
    everything = embedding_pairs(labels, max_negatives=10_000)[2]
    assert everything.size == len(labels) * (len(labels) - 1) // 2
