"""Clustering from the k-nearest-neighbour graph: threshold linkage is the all-pairs partition
wherever k covers every link (parity with the range search + union-find ``face cluster`` ran
before), Chinese whispers does not chain people through one link, and the pairwise / BCubed
scores are their definitions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from resvision.datasets.face.embeddings import EmbeddingModel, synthetic_embeddings
from resvision.tasks.face.clustering import (
    chinese_whispers,
    cluster_scores,
    drop_self,
    exact_knn,
    first_appearance,
    saturated,
    threshold_linkage,
)
from resvision.tasks.face.inference import cluster

from .cluster_reference import reference_cluster

pytestmark = pytest.mark.usefixtures("faiss_one_thread")


@pytest.fixture(scope="module")
def faces():
    """600 faces of people with a power-law spread of faces each (64-d)."""
    return synthetic_embeddings(600, seed=1, model=EmbeddingModel(dim=64, max_faces=60))


@pytest.mark.parametrize("threshold", [0.25, 0.4, 0.6, 0.9])
def test_threshold_linkage_is_the_all_pairs_partition_where_k_covers(faces, threshold):
    """k large enough that no face has its k-th neighbour above the threshold: the same ids,
    face for face (numbered by first appearance), as the range search. Mutations: links at
    ``>=`` instead of ``>`` (two faces at exactly the threshold: faiss's range search leaves
    them apart), ids by size instead of first appearance, both fail."""
    x, _ = faces
    x = np.concatenate([x, x[:3]])  # exact duplicates: cosine 1 with their original
    # two faces at a cosine of exactly the threshold (exact in float32), alone otherwise
    pair = np.zeros((2, x.shape[1]), np.float32)
    c = np.float32(threshold)
    pair[0, 0], pair[1, 0], pair[1, 1] = 1, c, np.sqrt(1 - np.float64(c) ** 2)
    assert pair[0] @ pair[1] == c
    x = np.concatenate([x, pair])
    scores, neighbours = exact_knn(x, 200)
    assert not saturated(scores, neighbours, threshold).any()
    ids = threshold_linkage(scores, neighbours, threshold)
    np.testing.assert_array_equal(ids, reference_cluster(x, threshold))
    np.testing.assert_array_equal(cluster(x, threshold, k=200), ids)


def test_saturated_faces_are_counted_and_k_fixes_them(faces):
    x, _ = faces
    scores, neighbours = exact_knn(x, 4)
    many = saturated(scores, neighbours, 0.25)
    assert many.any()  # faces with more than 4 links at 0.25
    assert ((scores[:, 3] >= 0.25) == many).all()
    scores, neighbours = exact_knn(x, 300)
    assert not saturated(scores, neighbours, 0.25).any()


def test_knn_leaves_each_face_out_even_behind_its_duplicate():
    x = np.eye(4, 8, dtype=np.float32)[[0, 0, 1, 2, 3]]  # rows 0 and 1 are the same face
    scores, neighbours = exact_knn(x, 2)
    assert neighbours[0, 0] == 1 and neighbours[1, 0] == 0
    assert (neighbours != np.arange(5)[:, None]).all()
    assert scores[0, 0] == pytest.approx(1.0) and scores[2, 0] == pytest.approx(0.0)
    # fewer other faces than k: padded
    s, i = drop_self(np.array([[1.0, 0.5]]), np.array([[0, 1]]), np.array([0]), 3)
    assert i.tolist() == [[1, -1, -1]] and s[0, 1] == -np.inf


def _two_groups_and_a_bridge():
    """Two groups of 8 faces linked within (cosine 0.8), and one link (0.6) between face 7 of
    the first and face 8 of the second: single linkage chains them."""
    n, k = 16, 15
    scores = np.full((n, k), -np.inf, np.float32)
    neighbours = np.full((n, k), -1, np.int64)
    for i in range(n):
        group = range(0, 8) if i < 8 else range(8, 16)
        others = [j for j in group if j != i]
        neighbours[i, : len(others)] = others
        scores[i, : len(others)] = 0.8
    neighbours[7, 7], scores[7, 7] = 8, 0.6
    neighbours[8, 7], scores[8, 7] = 7, 0.6
    return scores, neighbours


def test_chinese_whispers_does_not_chain_through_one_link():
    scores, neighbours = _two_groups_and_a_bridge()
    assert threshold_linkage(scores, neighbours, 0.5).tolist() == [0] * 16
    ids = chinese_whispers(scores, neighbours, 0.5)
    assert ids.tolist() == [0] * 8 + [1] * 8
    # below the threshold nothing links: everyone alone, in order
    assert chinese_whispers(scores, neighbours, 0.9).tolist() == list(range(16))


def test_chinese_whispers_keeps_people_apart_on_embeddings(faces):
    """On people with a spread of faces, at a low threshold where linkage chains people,
    Chinese whispers scores a higher BCubed F (the reason it is offered)."""
    x, people = faces
    scores, neighbours = exact_knn(x, 16)
    linked = cluster_scores(threshold_linkage(scores, neighbours, 0.2), people)
    whispered = cluster_scores(chinese_whispers(scores, neighbours, 0.2), people)
    assert linked["clusters"] < 0.5 * whispered["clusters"]  # chained into a few big ones
    assert whispered["bcubed_f"] > linked["bcubed_f"] + 0.2
    again = chinese_whispers(scores, neighbours, 0.2)
    np.testing.assert_array_equal(again, chinese_whispers(scores, neighbours, 0.2))


def _brute_force_scores(clusters, people):
    n = len(clusters)
    pairs = list(itertools.combinations(range(n), 2))
    same_c = [clusters[i] == clusters[j] for i, j in pairs]
    same_p = [people[i] == people[j] for i, j in pairs]
    both = sum(a and b for a, b in zip(same_c, same_p))
    precision = [
        sum(people[j] == people[i] for j in range(n) if clusters[j] == clusters[i])
        / sum(clusters[j] == clusters[i] for j in range(n))
        for i in range(n)
    ]
    recall = [
        sum(clusters[j] == clusters[i] for j in range(n) if people[j] == people[i])
        / sum(people[j] == people[i] for j in range(n))
        for i in range(n)
    ]
    return {
        "pairwise_precision": both / sum(same_c) if sum(same_c) else 1.0,
        "pairwise_recall": both / sum(same_p) if sum(same_p) else 1.0,
        "bcubed_precision": float(np.mean(precision)),
        "bcubed_recall": float(np.mean(recall)),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cluster_scores_are_their_definitions(seed):
    """Against per-pair and per-face loops over the definitions (float64 sums of at most a
    few hundred terms: 1e-12)."""
    rng = np.random.default_rng(seed)
    clusters = rng.integers(0, 6, 40)
    people = np.array(list("abcdefg"))[rng.integers(0, 7, 40)]
    ours = cluster_scores(clusters, people)
    for key, value in _brute_force_scores(clusters, people).items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key
    p, r = ours["bcubed_precision"], ours["bcubed_recall"]
    assert ours["bcubed_f"] == pytest.approx(2 * p * r / (p + r))
    assert ours["clusters"] == len(set(clusters)) and ours["people"] == len(set(people))


def test_cluster_scores_of_the_extremes():
    people = np.array([0, 0, 1, 1, 1])
    perfect = cluster_scores(np.array([5, 5, 2, 2, 2]), people)
    assert perfect["bcubed_f"] == 1 and perfect["pairwise_f"] == 1
    alone = cluster_scores(np.arange(5), people)
    assert alone["pairwise_precision"] == 1 and alone["pairwise_recall"] == 0
    assert alone["bcubed_precision"] == 1 and alone["bcubed_recall"] == pytest.approx(
        (2 * 0.5 + 3 / 3) / 5
    )
    one = cluster_scores(np.zeros(5), people)
    assert one["bcubed_recall"] == 1 and one["pairwise_precision"] == pytest.approx(4 / 10)
    with pytest.raises(ValueError, match="one value per face"):
        cluster_scores(np.zeros(3), people)


def test_first_appearance_numbers_clusters_in_gallery_order():
    assert first_appearance(np.array([7, 3, 7, 9, 3])).tolist() == [0, 1, 0, 2, 1]
    assert first_appearance(np.array([], np.int64)).tolist() == []
