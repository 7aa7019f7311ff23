"""Face data (RecordIO without MXNet, .bin, pairs.txt) and the verification protocol."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from resvision.datasets.face import (
    FaceFolder,
    RecordFaceDataset,
    SyntheticFaces,
    VerificationSet,
    folder_to_rec,
    read_bin,
    rec_to_folder,
    write_bin,
)
from resvision.datasets.recordio import (
    MAGIC,
    RecordIOError,
    RecordReader,
    RecordWriter,
    pack,
    unpack,
)
from resvision.tasks.face.evaluation import evaluate_embeddings, kfold

from .insightface_reference import reference_evaluate


def _identity_folder(root, people=3, each=4, size=40):
    rng = np.random.default_rng(0)
    for p in range(people):
        (root / f"person_{p}").mkdir(parents=True)
        for i in range(each):
            Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(
                root / f"person_{p}" / f"{i}.png"
            )
    return root


def test_recordio_round_trip_with_the_magic_number_inside_a_payload(tmp_path):
    payloads = [
        b"abc",
        b"x" * 8 + MAGIC.to_bytes(4, "little") + b"tail",
        MAGIC.to_bytes(4, "little") * 3,
        b"",
    ]
    with RecordWriter(tmp_path / "t.rec") as w:
        for i, p in enumerate(payloads):
            w.write(i, pack(float(i), p))
    reader = RecordReader(tmp_path / "t.rec")
    for i, p in enumerate(payloads):
        flag, label, data = unpack(reader.read(i))
        assert (flag, label, data) == (0, float(i), p)
    flag, label, data = unpack(pack(np.array([3.0, 9.0]), b"img"))
    assert flag == 2 and label.tolist() == [3.0, 9.0] and data == b"img"


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


def test_corrupt_and_truncated_records_name_the_offset(tmp_path):
    with RecordWriter(tmp_path / "t.rec") as w:
        w.write(0, pack(0.0, b"a" * 100))
        w.write(1, pack(1.0, b"b" * 100))
    data = (tmp_path / "t.rec").read_bytes()
    (tmp_path / "cut.rec").write_bytes(data[:-30])
    (tmp_path / "cut.idx").write_text((tmp_path / "t.idx").read_text())
    reader = RecordReader(tmp_path / "cut.rec")
    reader.read(0)
    with pytest.raises(RecordIOError, match=r"truncated: record at offset 132"):
        reader.read(1)
    bad = bytearray(data)
    bad[132] ^= 0xFF
    (tmp_path / "bad.rec").write_bytes(bytes(bad))
    (tmp_path / "bad.idx").write_text((tmp_path / "t.idx").read_text())
    with pytest.raises(RecordIOError, match=r"bad magic .* at offset 132"):
        RecordReader(tmp_path / "bad.rec").read(1)
    with pytest.raises(RecordIOError, match=r"index file .*missing\.idx"):
        (tmp_path / "missing.rec").write_bytes(b"")
        RecordReader(tmp_path / "missing.rec")


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


def test_synthetic_identities_are_deterministic_and_distinct():
    a, b = SyntheticFaces(5, 3, image_size=32, seed=1), SyntheticFaces(5, 3, image_size=32, seed=1)
    assert (a[4]["image"] == b[4]["image"]).all() and a[4]["label"] == 1
    assert not (a[0]["image"] == a[1]["image"]).all()  # another photo of the same person
    vset = a.verification_set(10)
    assert len(vset) == 20 and vset.issame.sum() == 5
