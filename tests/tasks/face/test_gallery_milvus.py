"""The face gallery on Milvus, tested against milvus-lite (Milvus's engine running in-process,
no mock): the same API as the embedded gallery, the same results with exact (FLAT) indexes,
and updates that become visible together or not at all."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip(
    "pymilvus", reason="the milvus extra is not installed (pip install resvision[milvus])"
)
pytest.importorskip(
    "milvus_lite", reason="milvus-lite is not installed (pip install resvision[milvus])"
)

from resvision.datasets.face.embeddings import EmbeddingModel, synthetic_embeddings
from resvision.tasks.face import EmbeddingSource, Gallery
from resvision.tasks.face.gallery.milvus import parse

pytestmark = [pytest.mark.milvus, pytest.mark.usefixtures("faiss_one_thread")]
DIM = 32


@pytest.fixture(scope="module")
def faces():
    x, people = synthetic_embeddings(350, seed=9, model=EmbeddingModel(dim=DIM, max_faces=20))
    return x, np.array([f"p{v}" for v in people])


@pytest.fixture(scope="module")
def pair(tmp_path_factory, faces):
    """The same faces in a milvus-lite gallery (FLAT index) and in the embedded one."""
    x, people = faces
    root = tmp_path_factory.mktemp("milvus")
    names = [f"f{i}" for i in range(300)]
    boxes = np.arange(300 * 4, dtype=np.float32).reshape(300, 4)
    milvus = Gallery.create(f"milvus:{root}/lite.db/faces", DIM, index_type="FLAT")
    local = Gallery.create(root / "local", DIM)
    for g in (milvus, local):
        with g.transaction() as t:
            t.add(x[:150], names[:150], people[:150], boxes=boxes[:150], photos=names[:150])
            t.add(x[150:300], names[150:], people[150:300])
    yield milvus, local
    milvus.close()


def test_the_same_results_as_the_embedded_gallery(pair, faces):
    x, people = faces
    milvus, local = pair
    assert len(milvus) == len(local) == 300
    assert milvus.names.tolist() == local.names.tolist()
    assert milvus.labels.tolist() == local.labels.tolist()
    q = x[300:]
    (ms, mn), (ls, ln) = milvus.search(q, 5), local.search(q, 5)
    np.testing.assert_array_equal(mn, ln)
    np.testing.assert_allclose(ms, ls, atol=1e-5)  # Milvus's own inner-product kernel
    filtered = sorted(set(people[:300].tolist()))[:3]
    np.testing.assert_array_equal(
        milvus.search(q, 3, labels=filtered)[1], local.search(q, 3, labels=filtered)[1]
    )
    np.testing.assert_array_equal(
        milvus.search(q, 3, threshold=0.5)[1], local.search(q, 3, threshold=0.5)[1]
    )
    np.testing.assert_array_equal(milvus.knn(6)[1], local.knn(6)[1])
    np.testing.assert_array_equal(
        milvus.cluster(0.4, "chinese-whispers"), local.cluster(0.4, "chinese-whispers")
    )
    a, b = milvus.faces(["f3", "f200"]), local.faces(["f3", "f200"])
    for key in ("name", "label", "photos", "boxes", "face_index"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    np.testing.assert_array_equal(milvus.embeddings(), local.embeddings())


def test_updates_remove_and_relabel_as_the_embedded_gallery(tmp_path, faces):
    x, people = faces
    g = Gallery.create(f"milvus:{tmp_path}/lite.db/people", DIM, index_type="FLAT")
    src = EmbeddingSource("32-d sha256:ab", "none", True)
    g.add(x[:50], [f"f{i}" for i in range(50)], people[:50], source=src)
    assert Gallery.open(f"milvus:{tmp_path}/lite.db/people").source == src
    with pytest.raises(ValueError, match="already holds faces named"):
        g.add(x[:1], ["f0"])
    with pytest.raises(RuntimeError), g.transaction() as t:
        t.add(x[50:60], [f"g{i}" for i in range(10)])
        raise RuntimeError("stop")
    assert len(g) == 50 and "g0" not in g.names  # the failed update stays invisible
    # an update left uncommitted (a killed writer) is invisible, then swept by the next one
    t = g.transaction()
    t.__enter__().add(x[60:70], [f"h{i}" for i in range(10)])
    assert len(g) == 50
    g.add(x[70:71], ["i0"])
    assert len(g) == 51 and "h0" not in g.names
    who = people[0]
    assert g.relabel(who, "renamed") == (people[:50] == who).sum()
    assert "renamed" in g.labels and who not in g.labels
    assert g.remove(labels=["renamed"]) == (people[:50] == who).sum()
    assert "renamed" not in g.labels
    with pytest.raises(ValueError, match="flip differ"):
        g.add(x[80:81], ["j"], source=EmbeddingSource("32-d sha256:ab", "none", False))
    g.close()


def test_gallery_paths_name_the_server_or_the_file(tmp_path):
    assert parse("milvus://db.example:19530/people") == ("http://db.example:19530", None, "people")
    assert parse("milvus://me:pw@db:19530/p") == ("http://db:19530", "me:pw", "p")
    assert parse("milvus:/data/lite.db/people") == ("/data/lite.db", None, "people")
    with pytest.raises(ValueError, match="not a Milvus gallery"):
        parse("milvus://host/people-2")
    with pytest.raises(FileNotFoundError, match="no gallery at"):
        Gallery.open(f"milvus:{tmp_path}/nothing.db/none")
