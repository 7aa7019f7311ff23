"""The IJB meta files of InsightFace's layout: read back as written, and bad files named."""

from __future__ import annotations

import numpy as np
import pytest

from resvision.datasets.face.ijb import read_ijb_meta

from ..tasks.face.ijb_generated import generate, write_meta


@pytest.fixture
def folder(tmp_path):
    protocol = generate(gallery_templates=(3, 3), probe_templates=10, images=40, dim=4, seed=1)
    marks = np.random.default_rng(0).uniform(20, 100, (40, 5, 2))
    write_meta(tmp_path, protocol, target="IJBB", landmarks=marks)
    return tmp_path, protocol, marks


def test_meta_files_read_back(folder):
    root, p, marks = folder
    meta = read_ijb_meta(root, "ijbb")
    assert meta.target == "IJBB" and len(meta) == 40 and meta.names[0] == "1.jpg"
    assert np.array_equal(meta.templates, p.templates) and np.array_equal(meta.medias, p.medias)
    assert np.array_equal(meta.pairs, p.pairs) and np.array_equal(meta.labels, p.labels)
    assert np.allclose(meta.landmarks, marks, atol=5e-4) and meta.landmarks.dtype == np.float32
    # faceness parsed from its text as InsightFace does (numpy's str -> float32)
    assert np.array_equal(meta.faceness, np.array([f"{s:.3f}" for s in p.faceness]).astype("f4"))
    assert [g.name for g in meta.galleries] == ["S1", "S2"] and meta.probes is not None
    for g, (templates, subjects) in zip(meta.galleries, p.galleries):
        assert np.array_equal(g.templates, templates) and np.array_equal(g.subjects, subjects)
    assert meta.image_paths()[1] == root / "loose_crop" / "2.jpg"


def test_without_the_1n_files_only_1_1(folder):
    root, _, _ = folder
    for name in ("S1", "S2"):
        (root / "meta" / f"ijbb_1N_gallery_{name}.csv").unlink()
    (root / "meta" / "ijbb_1N_probe_mixed.csv").unlink()
    meta = read_ijb_meta(root, "IJBB")
    assert meta.galleries == [] and meta.probes is None


def _edit(path, line, text):
    rows = path.read_text().splitlines()
    rows[line] = text
    path.write_text("\n".join(rows) + "\n")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: (m / "ijbb_face_tid_mid.txt").unlink(), "ijbb_face_tid_mid.txt.*does not exist"),
        (lambda m: _edit(m / "ijbb_face_tid_mid.txt", 2, "3.jpg 7"), "line 3: expected 3 fields"),
        (
            lambda m: _edit(m / "ijbb_name_5pts_score.txt", 4, "x.jpg" + " 1.0" * 11),
            "row 5 names 'x.jpg'",
        ),
        (
            lambda m: _edit(m / "ijbb_name_5pts_score.txt", 1, "2.jpg" + " a" * 11),
            "line 2: 'name x1 y1 ... x5 y5 score' must be numbers",
        ),
        (lambda m: _edit(m / "ijbb_template_pair_label.txt", 3, "1 2 5"), "line 4: the label"),
        (lambda m: (m / "ijbb_1N_gallery_S2.csv").unlink(), "ijbb_1N_gallery_S2.csv"),
        (lambda m: (m / "ijbb_1N_probe_mixed.csv").write_text(""), "probe_mixed.csv.*is empty"),
        (lambda m: _edit(m / "ijbb_1N_gallery_S1.csv", 2, "5;6"), "line 3: expected 2 fields"),
    ],
    ids=[
        "missing",
        "short-row",
        "other-order",
        "not-numbers",
        "bad-label",
        "partial-1N",
        "empty",
        "csv-row",
    ],
)
def test_bad_meta_files_are_named(folder, change, message):
    root, _, _ = folder
    change(root / "meta")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        read_ijb_meta(root, "IJBB")


def test_a_target_that_is_neither(tmp_path):
    with pytest.raises(ValueError, match="'IJBA' is not one of IJBB, IJBC"):
        read_ijb_meta(tmp_path, "IJBA")


def test_crops_report_unreadable_images_and_workers_get_no_meta(folder):
    import pickle

    from resvision.datasets.face.ijb import IJBImages

    root, _, _ = folder
    crops = IJBImages.from_meta(read_ijb_meta(root, "IJBB"), image_size=32)
    item = crops[3]  # the folder has meta files but no images
    assert "does not exist" in item["error"] and item["index"] == 3
    assert item["image"].shape == (3, 32, 32) and not item["image"].any()
    in_worker = pickle.loads(pickle.dumps(crops))  # what a DataLoader worker receives
    assert in_worker.meta is None and in_worker[3]["error"] == item["error"]
