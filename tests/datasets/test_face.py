"""Face data: identity folders <-> RecordIO, .bin and pairs.txt sets, synthetic identities,
norm_crop alignment."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from resvision.datasets.face import (
    ARCFACE_TEMPLATE,
    FaceFolder,
    RecordFaceDataset,
    SyntheticFaces,
    VerificationSet,
    estimate_norm,
    folder_to_rec,
    norm_crop,
    read_bin,
    rec_to_folder,
    template_for,
    write_bin,
)


def _identity_folder(root, people=3, each=4, size=40):
    rng = np.random.default_rng(0)
    for p in range(people):
        (root / f"person_{p}").mkdir(parents=True)
        for i in range(each):
            Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(
                root / f"person_{p}" / f"{i}.png"
            )
    return root


def test_folder_rec_folder_conversion(tmp_path):
    folder = _identity_folder(tmp_path / "faces")
    assert folder_to_rec(folder, tmp_path / "out" / "train.rec") == 12
    ds = RecordFaceDataset(tmp_path / "out")
    assert len(ds) == 12 and ds.num_classes == 3
    item = ds[(5, 1)]
    assert item["image"].shape == (3, 112, 112) and item["label"] == FaceFolder(folder).labels[5]
    assert rec_to_folder(tmp_path / "out" / "train.rec", tmp_path / "back") == 12
    # the identities keep their names (written next to the .rec); without them, their labels
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == FaceFolder(folder).identities
    (tmp_path / "out" / "train.names").unlink()
    assert rec_to_folder(tmp_path / "out" / "train.rec", tmp_path / "labels") == 12
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == [
        "0000000",
        "0000001",
        "0000002",
    ]


def test_bin_and_pairs_verification_sets(tmp_path):
    import cv2

    images = [
        cv2.imencode(".jpg", np.full((112, 112, 3), i * 10, np.uint8))[1].tobytes()
        for i in range(6)
    ]
    write_bin(tmp_path / "lfw.bin", images, [True, False, True])
    bins, issame = read_bin(tmp_path / "lfw.bin")
    assert len(bins) == 6 and issame.tolist() == [True, False, True]
    vset = VerificationSet.from_bin(tmp_path / "lfw.bin", 64)
    assert vset[3]["image"].shape == (3, 64, 64) and vset.name == "lfw"
    import pickle

    (tmp_path / "evil.bin").write_bytes(pickle.dumps((__import__("os").getcwd, [True])))
    with pytest.raises(ValueError, match="refusing to load"):
        read_bin(tmp_path / "evil.bin")
    root = tmp_path / "lfw"
    for name in ("Ann", "Bob"):
        (root / name).mkdir(parents=True)
        for i in (1, 2):
            Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(
                root / name / f"{name}_{i:04d}.jpg"
            )
    (tmp_path / "pairs.txt").write_text("1\t2\nAnn\t1\t2\nAnn\t1\tBob\t2\n")
    vset = VerificationSet.from_pairs(tmp_path / "pairs.txt", root)
    assert vset.issame.tolist() == [True, False] and len(vset) == 4


def test_synthetic_identities_are_deterministic_and_distinct():
    a, b = SyntheticFaces(5, 3, image_size=32, seed=1), SyntheticFaces(5, 3, image_size=32, seed=1)
    assert (a[4]["image"] == b[4]["image"]).all() and a[4]["label"] == 1
    assert not (a[0]["image"] == a[1]["image"]).all()  # another photo of the same person
    vset = a.verification_set(10)
    assert len(vset) == 20 and vset.issame.sum() == 5


def test_norm_crop_matches_the_similarity_formula_on_a_real_face():
    from skimage import data
    from skimage.transform import SimilarityTransform

    image = data.astronaut()
    landmarks = np.array(
        [[175.0, 109.0], [222.0, 108.0], [203.0, 140.0], [180.0, 168.0], [217.0, 166.0]], np.float32
    )
    for size in (112, 224, 128):
        if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
            tform = SimilarityTransform.from_estimate(landmarks, template_for(size))
        else:
            tform = SimilarityTransform()
            tform.estimate(landmarks, template_for(size))
        expected = __import__("cv2").warpAffine(
            image, tform.params[:2], (size, size), borderValue=0.0
        )
        np.testing.assert_allclose(estimate_norm(landmarks, size), tform.params[:2], atol=1e-6)
        got = norm_crop(image, landmarks, size).astype(int)
        # the matrices agree to 1e-6: bilinear rounding may differ by one grey level, rarely
        assert np.abs(got - expected).max() <= 1 and (got != expected).mean() < 0.01
    np.testing.assert_allclose(
        template_for(128), ARCFACE_TEMPLATE * (128 / 128) + [8, 0], atol=1e-5
    )
    np.testing.assert_allclose(template_for(112)[0], [38.2946, 51.6963], atol=1e-4)
    with pytest.raises(ValueError, match="multiples of 112 or 128"):
        template_for(100)
