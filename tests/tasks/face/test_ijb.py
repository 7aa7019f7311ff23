"""The IJB protocols against InsightFace's loop-style scripts (tests/tasks/face/ijb_reference.py)
on generated protocols: every figure identical.

The generated protocol has what makes the loops' arithmetic order matter: medias of many frames
(float32 sums), media ids shared between templates and not in row order, rows shuffled,
templates that repeat others' images (exactly equal scores: ROC ties), hard and easy
templates (TARs strictly between 0 and 1)."""

from __future__ import annotations

import numpy as np
import pytest

from resvision.datasets.face.ijb import TemplateSubjects
from resvision.tasks.face import ijb

from . import ijb_reference as ref
from .ijb_generated import generate

pytest.importorskip("sklearn", reason="scikit-learn (the dev extra) is the reference's ROC")


@pytest.fixture(scope="module")
def protocol():
    return generate(
        gallery_templates=(30, 30),
        probe_templates=300,
        images=3000,
        noise=1.2,
        duplicate_templates=8,
        seed=2,
    )


def _sets(p):
    return (
        [TemplateSubjects("G1", *p.galleries[0]), TemplateSubjects("G2", *p.galleries[1])],
        TemplateSubjects("probes", *p.probes),
    )


@pytest.mark.parametrize("normalize", [False, True], ids=["norm-kept", "normalized"])
@pytest.mark.parametrize("detector", [True, False], ids=["faceness", "no-faceness"])
def test_template_features_are_bit_identical_to_the_loops(protocol, normalize, detector):
    p = protocol
    x = ijb.image_features(p.features, p.faceness, normalize=normalize, detector_score=detector)
    expected_x = ref.prepare_features(
        p.features, p.faceness, use_norm_score=not normalize, use_detector_score=detector
    )
    assert x.dtype == np.float32 and np.array_equal(x, expected_x)
    ids, feats = ijb.template_features(x, p.templates, p.medias)
    expected, expected_ids, _ = ref.image2template_feature(expected_x, p.templates, p.medias)
    assert np.array_equal(ids, expected_ids)
    assert np.array_equal(feats, expected)  # bit for bit, not approximately
    if detector:  # the weights applied while pooling, as evaluate_ijb does: the same bits
        x = ijb.image_features(p.features, normalize=normalize, detector_score=False)
        _, fused = ijb.template_features(x, p.templates, p.medias, weights=p.faceness)
        assert np.array_equal(fused, expected)


def test_one_to_one_figures_are_identical(protocol):
    p = protocol
    x = ijb.image_features(p.features, p.faceness)
    ids, feats = ijb.template_features(x, p.templates, p.medias)
    scores = ijb.pair_scores(ids, feats, p.pairs)
    tars, auc, ref_scores, ref_fpr, ref_tpr = ref.evaluate_11(
        p.features, p.faceness, p.templates, p.medias, p.pairs[:, 0], p.pairs[:, 1], p.labels
    )
    # the matrix product sums in another order than the loop's np.sum: the last bit may differ
    assert np.abs(scores - ref_scores).max() <= 4e-16
    assert len(np.unique(ref_scores)) < len(ref_scores)  # the protocol has tied scores ...
    assert len(np.unique(scores)) == len(np.unique(ref_scores))  # ... and they stay tied
    fpr, tpr, _ = ijb.roc_curve(scores, p.labels)
    assert np.array_equal(fpr, ref_fpr) and np.array_equal(tpr, ref_tpr)
    ours = ijb.tar_at_fars(fpr, tpr)
    assert ours == [float(t) for t in tars]
    assert 0 < ours[0] < ours[-1] < 1  # a protocol where the operating points differ
    assert ijb.roc_auc(fpr, tpr) == auc
    assert tuple(ref.X_LABELS) == ijb.FARS


def test_scores_in_blocks_equal_one_product(protocol):
    p = protocol
    ids, feats = ijb.template_features(
        ijb.image_features(p.features, p.faceness), p.templates, p.medias
    )
    whole = ijb.pair_scores(ids, feats, p.pairs)
    blocks = ijb.pair_scores(ids, feats, p.pairs, block_elements=7 * 300)  # 7 gallery rows
    assert np.abs(blocks - whole).max() <= 4e-16
    order = np.lexsort((p.pairs[:, 1], p.pairs[:, 0]))  # the official files' order
    sorted_blocks = ijb.pair_scores(ids, feats, p.pairs[order], block_elements=7 * 300)
    assert np.array_equal(sorted_blocks, blocks[order])


def test_roc_curve_is_scikit_learns_with_ties():
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(0)
    for n, levels in ((5000, 40), (3000, 3000), (50, 5)):
        scores = np.round(rng.normal(size=n) * levels / 4) / levels  # many equal scores
        labels = rng.random(n) < 0.3
        expected = roc_curve(labels, scores)
        got = ijb.roc_curve(scores, labels)
        for a, b in zip(got, expected):
            assert np.array_equal(a, b)
        if levels == n:  # mostly distinct scores: runs of one label are collinear, dropped
            assert len(got[0]) < 0.8 * len(np.unique(scores))


def test_roc_curve_is_scikit_learns_on_random_small_cases():
    """Ties among impostors, among genuine pairs and across both, two or three distinct
    scores, one genuine pair: the points that turn are all found."""
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(3)
    for _ in range(400):
        n = int(rng.integers(2, 120))
        levels = int(rng.choice([1, 2, 3, 8, 50, 10**6]))
        scores = np.round(rng.normal(size=n) * levels / 4) / levels
        labels = rng.random(n) < rng.uniform(0.02, 0.98)
        if labels.all() or not labels.any():
            continue
        for a, b in zip(ijb.roc_curve(scores, labels), roc_curve(labels, scores)):
            assert np.array_equal(a, b), (scores, labels)


def test_nearest_point_is_eval_ijbc_s_choice_even_on_ties():
    rng = np.random.default_rng(1)
    for _ in range(200):
        fpr = np.sort(rng.choice(np.linspace(0, 1, 41), 12))  # repeated and equidistant values
        tpr = np.sort(rng.random(12))
        fars = [0.1, 0.05, 0.0125, 0.5, 0.0, 1.0]
        fpr_r, tpr_r = np.flipud(fpr), np.flipud(tpr)
        expected = [tpr_r[min(zip(abs(fpr_r - x), range(len(fpr_r))))[1]] for x in fars]
        assert ijb.tar_at_fars(fpr, tpr, fars) == list(expected)


def test_one_to_n_figures_are_identical(protocol):
    p = protocol
    x = ijb.image_features(p.features, p.faceness)
    ids, feats = ijb.template_features(x, p.templates, p.medias)
    galleries, probes = _sets(p)
    metrics, results = ijb.evaluate_1n(ids, feats, galleries, probes)
    expected = ref.run_1n(x, p.templates, p.medias, p.galleries[0], p.galleries[1], p.probes)
    for key in ("rank1", "rank5", "rank10", "TPIR@FPIR=0.01", "TPIR@FPIR=0.1"):
        assert metrics[key] == expected[key], key
    # the script reads TPIR at 10 ** -2.0 = 0.01000000000000004 and 10 ** -1.0 (not exactly
    # 0.01 and 0.1): the same threshold rank for any realistic number of probes
    for g, recalls, threshes in zip(results, expected["recalls"], expected["threshes"]):
        assert [g.tpir[0.01], g.tpir[0.1]] == [recalls[50], recalls[75]]
        assert [g.thresholds[0.01], g.thresholds[0.1]] == [threshes[50], threshes[75]]
    assert 0 < metrics["TPIR@FPIR=0.01"] < metrics["TPIR@FPIR=0.1"] < metrics["rank1"] < 1


def _meta(p, folder):
    from resvision.datasets.face.ijb import IJBMeta

    n = len(p.templates)
    names = np.array([f"{i}.jpg" for i in range(n)])
    marks = np.zeros((n, 5, 2), np.float32)
    return IJBMeta(
        "IJBC", folder, names, marks, p.faceness, p.templates, p.medias, p.pairs, p.labels,
        *_sets(p),
    )  # fmt: skip


def test_unreadable_images_are_left_out_as_if_absent(protocol, tmp_path):
    """NaN rows (images that could not be read) give the figures of the protocol without
    those rows; a template that loses every image scores 0 against everything (where the
    scripts, which never lose an image, would look up another template's feature)."""
    p = protocol
    drop = np.random.default_rng(5).random(len(p.templates)) < 0.1
    _, first = np.unique(p.templates, return_index=True)
    drop[first] = False  # every template keeps an image
    features = p.features.copy()
    features[drop] = np.nan
    result = ijb.evaluate_ijb(_meta(p, tmp_path), features)
    keep = ~drop
    tars, auc, scores, _, _ = ref.evaluate_11(
        p.features[keep], p.faceness[keep], p.templates[keep], p.medias[keep],
        p.pairs[:, 0], p.pairs[:, 1], p.labels,
    )  # fmt: skip
    assert [result.metrics[ijb.tar_key(f)] for f in ijb.FARS] == [float(t) for t in tars]
    assert np.abs(result.scores - scores).max() <= 4e-16
    assert result.metrics["AUC"] == auc and result.images_used == int(keep.sum())
    assert list(result.summary())[:8] == [*map(ijb.tar_key, ijb.FARS), "AUC", "TPIR@FPIR=0.01"]

    lost = p.pairs[0, 1]
    features[p.templates == lost] = np.nan
    meta = _meta(p, tmp_path)
    unknown = np.full_like(meta.probes.subjects, -1)  # no probe of an enrolled subject
    meta.probes = TemplateSubjects("probes", meta.probes.templates, unknown)
    only_1_1 = ijb.evaluate_ijb(meta, features)
    assert "rank1" not in only_1_1.metrics and only_1_1.metrics["AUC"] > 0
    assert "enrolled" in only_1_1.settings["one_to_n_not_computed"]
    again = ijb.evaluate_ijb(_meta(p, tmp_path), features)
    with_lost = (p.pairs == lost).any(1)
    assert (again.scores[with_lost] == 0).all()
    assert np.array_equal(again.scores[~with_lost], result.scores[~with_lost])


def test_protocol_errors_name_the_problem(protocol, tmp_path):
    p = protocol
    ids, feats = ijb.template_features(p.features, p.templates, p.medias)
    with pytest.raises(ValueError, match="template 999999999 has no image"):
        ijb.pair_scores(ids, feats, np.array([[ids[0], 999_999_999]]))
    with pytest.raises(ValueError, match="needs genuine and impostor pairs"):
        ijb.roc_curve(np.zeros(3), np.zeros(3, bool))
    g = TemplateSubjects("G1", np.array([ids[0], ids[1]]), np.array([7, 7]))
    with pytest.raises(ValueError, match="subject 7 has 2 gallery templates"):
        ijb.evaluate_1n(ids, feats, [g], TemplateSubjects("probes", ids[2:4], np.array([7, 8])))
