"""The verification ROC curve: every threshold's accept rates, drawn with the operating points."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from resvision.tasks.face.evaluation import FARS, roc_auc, tar_at_far
from resvision.tasks.face.visualize import roc_curve, save_roc_png


def _scores(seed=0, n=400):
    g = np.random.default_rng(seed)
    issame = g.random(n) < 0.4
    similarity = np.where(issame, 0.5, 0.1) + 0.25 * g.normal(size=n)
    similarity[:50] = np.round(similarity[:50], 1)  # ties
    return similarity, issame


def test_each_point_counts_the_pairs_accepted_at_its_threshold():
    similarity, issame = _scores()
    far, tar, threshold = roc_curve(similarity, issame)
    assert (np.diff(threshold) < 0).all() and (np.diff(far) >= 0).all()
    for k in range(0, len(threshold), 7):
        accept = similarity >= threshold[k]
        assert tar[k] == accept[issame].mean() and far[k] == accept[~issame].mean()
    assert far[-1] == 1 and tar[-1] == 1
    # the area under the curve (ties as straight segments) is the rank statistic
    area = np.trapezoid(np.r_[0, tar], np.r_[0, far])
    assert area == pytest.approx(roc_auc(similarity, issame), abs=1e-12)


def test_operating_points_agree_with_tar_at_far():
    similarity, issame = _scores(1, 5000)
    far, tar, _ = roc_curve(similarity, issame)
    for target in FARS[:3]:
        expected_tar, _, _ = tar_at_far(similarity, issame, target)
        k = np.searchsorted(far, target, side="right") - 1
        assert far[k] <= target and tar[k] == pytest.approx(expected_tar, abs=2 / issame.sum())


def test_roc_png_and_its_refusals(tmp_path):
    similarity, issame = _scores()
    path = save_roc_png({"lfw": (similarity, issame), "cfp": _scores(2)}, tmp_path / "r.png", FARS)
    assert Image.open(path).size[0] > 300
    with pytest.raises(ValueError, match="needs same and different pairs"):
        roc_curve(similarity, np.ones_like(issame))
