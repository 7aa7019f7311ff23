"""The embedded face gallery: the Python API of issue 20 item 5, exact search equal to faiss's
flat index, the IVF-PQ index (delta, merge, removals, compaction) against exact search, label
filters and the "unknown" threshold, provenance, atomic updates (an exception, and a real
SIGKILL of a subprocess mid-update and mid-index-build), and today's .npz in and out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import faiss
import numpy as np
import pytest

from resvision.datasets.face.embeddings import EmbeddingModel, synthetic_embeddings
from resvision.tasks.face import EmbeddingSource, Gallery
from resvision.tasks.face.clustering import exact_knn, threshold_linkage

from .cluster_reference import reference_cluster

DIM = 64

pytestmark = pytest.mark.usefixtures("faiss_one_thread")
MODEL = EmbeddingModel(dim=DIM, max_faces=40)


@pytest.fixture(scope="module")
def faces():
    x, people = synthetic_embeddings(2000, seed=3, model=MODEL)
    return x, np.array([f"p{v}" for v in people])


def _names(n, start=0):
    return [f"face{i}" for i in range(start, start + n)]


def _flat(x, q, k):
    return faiss.knn(
        np.ascontiguousarray(q), np.ascontiguousarray(x), k, faiss.METRIC_INNER_PRODUCT
    )


def test_the_api_of_the_issue(tmp_path, faces):
    """Gallery.create / open, add with labels and metadata, len, names, labels, search (Q, k)
    best first, cluster one id per face in order, remove by name and label."""
    x, people = faces
    g = Gallery.create(tmp_path / "g", DIM)
    assert len(g) == 0 and g.names.shape == (0,)
    boxes = np.tile(np.float32([1, 2, 30, 40]), (100, 1))
    assert g.add(x[:100], _names(100), labels=people[:100], boxes=boxes) == 100
    assert g.add(x[100:300], _names(200, 100)) == 200
    g = Gallery.open(tmp_path / "g")
    assert len(g) == 300 and g.names.tolist() == _names(300)
    assert g.labels.tolist() == people[:100].tolist() + [""] * 200
    scores, names = g.search(x[:7], 4)
    assert scores.shape == names.shape == (7, 4)
    assert names[:, 0].tolist() == _names(7) and (np.diff(scores, axis=1) <= 0).all()
    ids = g.cluster(0.5)
    assert ids.shape == (300,) and ids[0] == 0
    np.testing.assert_array_equal(ids, reference_cluster(x[:300], 0.5))
    assert g.remove(names=["face3"], labels=[people[0]]) == 1 + (people[:100] == people[0]).sum()
    assert "face3" not in g.names and people[0] not in g.labels
    assert np.isfinite(g.faces(["face10"])["boxes"]).all()
    assert np.isnan(g.faces(["face150"])["boxes"]).all()


def test_exact_search_is_faiss_flat_search(tmp_path, faces):
    """Below the exact size every face is compared: the same neighbours and scores as an
    IndexFlatIP (faiss's own kernels on the same vectors; 1e-6 covers the summation order
    of a chunked versus a whole search)."""
    x, _ = faces
    g = Gallery.create(tmp_path / "g", DIM)
    g.add(x[:1900], _names(1900))
    q = x[1900:]
    scores, names = g.search(q, 5)
    d, i = _flat(x[:1900], q, 5)
    assert len(q) == 100 and (names == np.array(_names(1900))[i]).all()
    np.testing.assert_allclose(scores, d, atol=1e-6)


def test_labels_threshold_and_padding(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, DIM)).astype(np.float32)
    g = Gallery.create(tmp_path / "g", DIM)
    g.add(x, list("abcdef"), labels=["ann", "ann", "bob", "bob", "cy", ""])
    scores, names = g.search(x[[0, 4]], 3, labels=["bob"])
    assert set(names.ravel()) == {"c", "d"} | ({""} if names.size > 4 else set())
    assert names[:, :2].tolist() in (
        [["c", "d"], ["c", "d"]],
        [["d", "c"], ["c", "d"]],
        [["c", "d"], ["d", "c"]],
        [["d", "c"], ["d", "c"]],
    )
    assert names[0, 2] == "" and scores[0, 2] == -np.inf  # only two faces of bob
    scores, names = g.search(x[:1], 10)
    assert names[0, :6].tolist().count("") == 0 and names[0, 6:].tolist() == [""] * 4
    scores, names = g.search(x[:1] + 0.01, 3, threshold=0.9)
    assert names[0].tolist() == ["a", "", ""] and scores[0, 1] == -np.inf
    unknown = rng.standard_normal((1, DIM))
    assert g.search(unknown, 2, threshold=0.9)[1].tolist() == [["", ""]]
    assert g.search(x[:1], 2, labels=["nobody"])[1].tolist() == [["", ""]]


def test_bad_input_is_refused_with_its_reason(tmp_path):
    g = Gallery.create(tmp_path / "g", DIM)
    x = np.eye(3, DIM, dtype=np.float32)
    g.add(x, ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"already holds faces named \['b'\]"):
        g.add(x[:2], ["b", "z"])
    assert len(g) == 3 and "z" not in g.names  # nothing of the refused add
    with pytest.raises(ValueError, match="32-d|holds 64-d"):
        g.add(np.ones((1, 32)), ["w"])
    with pytest.raises(ValueError, match="repeat"):
        g.add(x[:2], ["u", "u"])
    with pytest.raises(ValueError, match="zero vectors"):
        g.add(np.zeros((1, DIM)), ["v"])
    with pytest.raises(TypeError, match="unknown face metadata"):
        g.add(x[:1], ["q"], colour=["red"])
    with pytest.raises(ValueError, match="holds 64-d"):
        g.search(np.ones((1, 8)), 1)
    with pytest.raises(ValueError, match="unknown clustering method"):
        g.cluster(0.5, method="kmeans")
    with pytest.raises(FileExistsError, match="already holds a gallery"):
        Gallery.create(tmp_path / "g", DIM)
    with pytest.raises(FileNotFoundError, match="face gallery import"):
        Gallery.open(tmp_path / "nothing")
    np.savez(tmp_path / "e.npz", embeddings=x, names=np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match="not a gallery: import it"):
        Gallery.open(tmp_path / "e.npz")


def test_models_are_never_mixed(tmp_path):
    a = EmbeddingSource("512-d 112px sha256:aaaa", "norm_crop", True)
    b = EmbeddingSource("512-d 112px sha256:aaaa", "norm_crop", False)
    x = np.eye(4, DIM, dtype=np.float32)
    g = Gallery.create(tmp_path / "g", DIM)
    g.add(x[:1], ["a"], source=a)
    assert Gallery.open(tmp_path / "g").source == a
    with pytest.raises(ValueError, match=r"\(flip differ\)"):
        g.add(x[1:2], ["b"], source=b)
    g.add(x[1:2], ["b"])  # not stated: taken on trust
    assert len(g) == 2 and g.source == a
    unknown = Gallery.create(tmp_path / "u", DIM)
    unknown.add(x[:1], ["a"])
    with pytest.raises(ValueError, match="does not record which model"):
        unknown.add(x[1:2], ["b"], source=a)


def test_an_exception_inside_a_transaction_changes_nothing(tmp_path, faces):
    x, _ = faces
    g = Gallery.create(tmp_path / "g", DIM)
    g.add(x[:10], _names(10))
    with pytest.raises(RuntimeError, match="stop"), g.transaction() as t:
        t.add(x[10:20], _names(10, 10))
        t.add(x[20:30], _names(10, 20))
        raise RuntimeError("stop")
    assert len(g) == 10 and g.names.tolist() == _names(10)
    with g.transaction() as t:  # the next update reuses the rows the failed one wrote
        t.add(x[30:35], _names(5, 30))
    assert g.names.tolist() == _names(10) + _names(5, 30)
    np.testing.assert_array_equal(g.embeddings()[10:], x[30:35])


def test_the_bulk_paths_writer_adds_in_chunks_in_one_update(tmp_path, faces):
    """``face embed --gallery``'s assemble step: NpzWriter's columns, added ``chunk`` faces at a
    time inside one transaction, give what one ``add`` gives; an error or ``discard`` leaves
    the gallery as it was; another model is refused before anything is written."""
    from resvision.tasks.face.gallery.writer import GalleryWriter

    x, people = faces
    src = EmbeddingSource("64-d sha256:aa", "none", True)
    whole = Gallery.create(tmp_path / "whole", DIM)
    whole.add(x[:10], _names(10), people[:10], source=src, photos=_names(10))
    adds = []
    with GalleryWriter(str(tmp_path / "g"), dim=DIM, source=src, chunk=4) as out:
        real_add = out._transaction.add
        out._transaction.add = lambda *a, **k: adds.append(len(a[1])) or real_add(*a, **k)
        for i in range(10):
            out.append(
                embeddings=x[i : i + 1], names=[f"face{i}"], labels=[people[i]], photos=[f"face{i}"]
            )
            assert len(Gallery.open(tmp_path / "g")) == 0  # nothing visible before the end
        out.append(photos_without_faces=["empty.jpg"], paths_without_faces=["/p/empty.jpg"])
    assert adds == [4, 4, 2] and out.size == 10
    g = Gallery.open(tmp_path / "g")
    np.testing.assert_array_equal(g.embeddings(), whole.embeddings())
    assert g.names.tolist() == whole.names.tolist() and g.labels.tolist() == whole.labels.tolist()
    assert "empty.jpg" in g.photos()["photo"].tolist() and g.source == src
    with (
        pytest.raises(RuntimeError, match="stop"),
        GalleryWriter(str(tmp_path / "g"), dim=DIM) as out,
    ):
        out.append(embeddings=x[10:20], names=_names(10, 10))
        raise RuntimeError("stop")
    with GalleryWriter(str(tmp_path / "g"), dim=DIM) as out:
        out.append(embeddings=x[10:20], names=_names(10, 10))
        out.discard()
    assert len(Gallery.open(tmp_path / "g")) == 10
    other = EmbeddingSource("64-d sha256:bb", "none", True)
    with pytest.raises(ValueError, match="model differ"):
        GalleryWriter(str(tmp_path / "g"), dim=DIM, source=other).__enter__()
    with pytest.raises(ValueError, match="holds 64-d"):
        GalleryWriter(str(tmp_path / "g"), dim=32, source=src).__enter__()


def test_relabel_renames_and_merges(tmp_path):
    g = Gallery.create(tmp_path / "g", DIM)
    g.add(np.eye(5, DIM), list("abcde"), labels=["ann", "ann", "anne", "bob", ""])
    assert g.relabel("anne", "ann") == 1
    assert g.labels.tolist() == ["ann", "ann", "ann", "bob", ""]
    assert g.relabel(["ann", "bob"], "family") == 4
    assert g.labels.tolist() == ["family"] * 4 + [""]
    assert g.relabel("nobody", "x") == 0


def test_photos_are_remembered_and_removed(tmp_path):
    g = Gallery.create(tmp_path / "g", DIM)
    g.add(
        np.eye(3, DIM),
        ["a.jpg#0", "a.jpg#1", "b.jpg#0"],
        labels=["ann", "bob", "ann"],
        photos=["a.jpg", "a.jpg", "b.jpg"],
        paths=["/p/a.jpg", "/p/a.jpg", "/p/b.jpg"],
        photos_without_faces=["empty.jpg"],
        paths_without_faces=["/p/empty.jpg"],
    )
    known = g.photos()
    assert known["photo"].tolist() == ["a.jpg", "b.jpg", "empty.jpg"]
    assert known["path"].tolist() == ["/p/a.jpg", "/p/b.jpg", "/p/empty.jpg"]
    assert g.remove(labels=["ann"]) == 2
    assert len(g.photos()["photo"]) == 3  # removing a person keeps the photos known
    assert g.remove(photos=["a.jpg", "empty.jpg"]) == 1
    assert g.photos()["photo"].tolist() == ["b.jpg"] and len(g) == 0


def test_the_index_finds_what_exact_search_finds(tmp_path, faces, monkeypatch):
    """Above ``exact_below`` the gallery builds an IVF-PQ index, adds later faces to a delta
    searched exactly, merges the delta into the index past its size (1% and at least 2,000
    faces; 300 here), masks removed faces, and compacts them away past a quarter: through
    all of it, search agrees with exact search on the faces of known people (measured 0.99
    at 64-d with these small lists; the 0.99 target is the benchmark's, at 512-d; rows mixed
    up anywhere would give about 0) and every score is an exact cosine."""
    from resvision.tasks.face.gallery import local

    monkeypatch.setattr(local, "MERGE_AT", (300, 0.01))
    x, people = faces
    g = Gallery.create(tmp_path / "g", DIM, exact_below=500)
    g.add(x[:1000], _names(1000), labels=people[:1000])
    info = g.info()
    assert info["search"].startswith("IVF32,PQ16x4fs") and info["indexed"] == 1000
    g.add(x[1000:1200], _names(200, 1000), labels=people[1000:1200])
    assert g.info()["indexed"] == 1000 and g.info()["not_indexed"] == 200  # the delta
    q, qp = x[1600:2000], people[1600:2000]
    mated = np.isin(qp, people[:1200])
    _, i = _flat(x[:1200], q, 5)
    scores, names = g.search(q, 5)
    hit = names[:, 0] == np.array(_names(1200))[i[:, 0]]
    assert hit[mated].mean() >= 0.95
    found = np.array([int(n[4:]) for n in names[:, 0]])
    np.testing.assert_allclose(scores[:, 0], np.einsum("qd,qd->q", q, x[found]), atol=1e-6)
    g.add(x[1200:1600], _names(400, 1200), labels=people[1200:1600])  # past 300: merged
    assert g.info()["indexed"] == 1600 and g.info()["not_indexed"] == 0
    gone = people[0]
    g.remove(labels=[gone])
    scores, names = g.search(x[:1600][people[:1600] == gone], 10)
    assert not set(names.ravel()) & set(np.array(_names(1600))[people[:1600] == gone])
    before = g.names
    g.remove(names=[n for n in before[: len(before) // 3]])  # past a quarter: compacted
    info = g.info()
    assert info["removed_rows"] == 0 and info["indexed"] == len(g)
    scores, names = g.search(x[1500:1510], 1)  # every face still finds itself
    assert names[:, 0].tolist() == _names(10, 1500) and np.allclose(scores[:, 0], 1, atol=1e-6)
    kept = [int(n[4:]) for n in g.names]  # each face's vector moved with it
    assert kept == sorted(kept) and len(kept) == len(g)
    np.testing.assert_array_equal(g.embeddings(), x[kept])


def test_index_parameters_are_recorded_and_overridable(tmp_path, faces):
    x, _ = faces
    g = Gallery.create(tmp_path / "g", DIM, exact_below=500)
    g.add(x[:600], _names(600))
    assert "nprobe 16" in g.info()["search"]
    g.set_search(nprobe=64, rerank=50)
    assert "nprobe 64, 50 candidates" in Gallery.open(tmp_path / "g").info()["search"]
    assert g.search(x[:2], 3, nprobe=256)[1][:, 0].tolist() == _names(2)
    g.set_search(nlist=16)  # a structural change: trained again
    assert Gallery.open(tmp_path / "g").info()["search"].startswith("IVF16,")
    g.set_search(exact_below=10_000)
    assert g.info()["search"].startswith("exact")
    with pytest.raises(ValueError, match="unknown index parameters"):
        g.set_search(efsearch=3)


def test_the_knn_graph_of_a_gallery_is_the_exact_one(tmp_path, faces):
    x, _ = faces
    g = Gallery.create(tmp_path / "g", DIM)
    g.add(x[:400], _names(400))
    g.remove(names=_names(50, 100))  # positions shift past the hole
    kept = np.r_[np.arange(100), np.arange(150, 400)]
    scores, neighbours = g.knn(8)
    ref_scores, ref = exact_knn(x[kept], 8)
    np.testing.assert_array_equal(neighbours, ref)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-6)
    np.testing.assert_array_equal(g.cluster(0.3, k=8), threshold_linkage(ref_scores, ref, 0.3))


# -- SIGKILL ----------------------------------------------------------------------------------
KILLED_ADD = """
import sys, time, numpy as np
from resvision.tasks.face import Gallery
g = Gallery.open(sys.argv[1])
x = np.random.default_rng(7).standard_normal((4000, {dim})).astype(np.float32)
with g.transaction() as t:
    for b in range(40):
        t.add(x[b * 100:(b + 1) * 100], [f"new{{i}}" for i in range(b * 100, (b + 1) * 100)])
        if b == 5:
            print("half-way", flush=True)
            time.sleep(60)
"""

KILLED_BUILD = """
import sys, time, numpy as np
from resvision.tasks.face.gallery import local
from resvision.tasks.face import Gallery
build = local.build_index
def slow_build(*args, **kwargs):
    index = build(*args, **kwargs)
    print("built, not yet named", flush=True)
    time.sleep(60)
    return index
local.build_index = slow_build
g = Gallery.open(sys.argv[1])
x = np.random.default_rng(8).standard_normal((600, {dim})).astype(np.float32)
g.add(x, [f"big{{i}}" for i in range(600)])
"""


def _kill_half_way(script: str, gallery: Path) -> None:
    """Run ``script`` on ``gallery`` in a subprocess and SIGKILL it once it says so."""
    code = textwrap.dedent(script.format(dim=DIM))
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(gallery)], stdout=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        assert line.strip(), "the subprocess ended before its signal"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL


def test_a_sigkill_mid_update_leaves_the_last_completed_add(tmp_path, faces):
    x, _ = faces
    path = tmp_path / "g"
    g = Gallery.create(path, DIM)
    g.add(x[:300], _names(300))
    before = g.search(x[:20], 3)
    g.close()
    _kill_half_way(KILLED_ADD, path)  # 600 faces written, not committed
    assert (path / "vectors.0.f32").stat().st_size > 300 * DIM * 4  # the killed add's bytes
    g = Gallery.open(path)
    assert len(g) == 300 and g.names.tolist() == _names(300)
    after = g.search(x[:20], 3)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[0], before[0])
    g.add(x[300:310], _names(10, 300))  # and it takes the next update
    assert len(g) == 310 and (path / "vectors.0.f32").stat().st_size == 310 * DIM * 4
    np.testing.assert_array_equal(g.embeddings()[300:], x[300:310])


def test_a_sigkill_mid_index_build_leaves_the_faces_searchable(tmp_path, faces):
    x, _ = faces
    path = tmp_path / "g"
    g = Gallery.create(path, DIM, exact_below=500)
    g.add(x[:100], _names(100))
    g.close()
    _kill_half_way(KILLED_BUILD, path)  # the 600 faces committed, their index not named
    g = Gallery.open(path)
    assert len(g) == 700 and g.info()["search"].startswith("exact")
    assert g.search(x[:5], 1)[1][:, 0].tolist() == _names(5)
    g.add(x[100:101], _names(1, 100))  # the next update builds it and sweeps the orphan
    assert g.info()["search"].startswith("IVF") and len(list(path.glob("index.*"))) == 1


# -- .npz -------------------------------------------------------------------------------------
def test_npz_of_face_crops_round_trips(tmp_path, faces):
    x, _ = faces
    names = np.array([f"ann/{i}.jpg" for i in range(3)] + ["top.jpg"])
    np.savez(tmp_path / "crops.npz", embeddings=x[:4], names=names)
    g = Gallery.create(tmp_path / "g", DIM)
    assert g.import_npz(tmp_path / "crops.npz") == 4
    assert g.labels.tolist() == ["ann", "ann", "ann", ""]  # the crops' folders
    assert g.export_npz(tmp_path / "out.npz") == "embeddings of face crops"
    out = np.load(tmp_path / "out.npz")
    np.testing.assert_array_equal(out["names"], names)
    np.testing.assert_array_equal(out["embeddings"], x[:4])


def test_npz_of_photos_round_trips_with_its_source(tmp_path, faces):
    x, _ = faces
    src = EmbeddingSource("32-d 32px sha256:beef", "norm_crop", True)
    arrays = {
        "embeddings": x[:3],
        "names": np.array(["a/1.png#0", "a/1.png#1", "b/1.png#0"]),
        "labels": np.array(["a", "a", "b"]),
        "photos": np.array(["a/1.png", "a/1.png", "b/1.png"]),
        "paths": np.array(["/x/a/1.png", "/x/a/1.png", "/x/b/1.png"]),
        "face_index": np.array([0, 1, 0]),
        "boxes": np.arange(12, dtype=np.float32).reshape(3, 4),
        "scores": np.float32([0.9, 0.8, 0.7]),
        "landmarks": np.arange(30, dtype=np.float32).reshape(3, 5, 2),
        "photos_without_faces": np.array(["c/empty.png"]),
        "source": np.array(src.to_json()),
    }
    np.savez(tmp_path / "photos.npz", **arrays)
    g = Gallery.create(tmp_path / "g", DIM)
    g.import_npz(tmp_path / "photos.npz")
    assert g.source == src
    assert g.export_npz(tmp_path / "out.npz") == "a gallery of photos"
    out = np.load(tmp_path / "out.npz")
    assert set(out.files) == set(arrays)
    for key, value in arrays.items():
        np.testing.assert_array_equal(out[key], value, err_msg=key)
    other = EmbeddingSource("32-d 32px sha256:f00d", "norm_crop", True)
    with pytest.raises(ValueError, match="records model"):
        Gallery.create(tmp_path / "h", DIM).import_npz(tmp_path / "photos.npz", source=other)
