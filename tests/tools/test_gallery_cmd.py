"""``resvision face gallery ...`` and ``face search`` / ``face cluster`` on a gallery, as a user
runs them on .npz files of ``face embed`` (no model needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from resvision.datasets.face.embeddings import EmbeddingModel, synthetic_embeddings
from resvision.tasks.face import Gallery
from resvision.tools.cli import main

pytestmark = pytest.mark.usefixtures("faiss_one_thread")


@pytest.fixture
def crops(tmp_path):
    """Face crops of people with a spread of faces each (128-d), and queries: faces of the
    same people not in the gallery (best cosines 0.43-0.88, 5th-95th percentile), and of
    people it has never seen (0.26-0.40)."""
    x, people = synthetic_embeddings(500, seed=5, model=EmbeddingModel(dim=128, max_faces=30))
    names = np.array([f"p{p}/{i}.jpg" for i, p in enumerate(people)])
    seen = np.isin(people, people[:400])
    np.savez(tmp_path / "crops.npz", embeddings=x[:400], names=names[:400])
    np.savez(tmp_path / "known.npz", embeddings=x[400:][seen[400:]], names=names[400:][seen[400:]])
    np.savez(
        tmp_path / "strangers.npz", embeddings=x[400:][~seen[400:]], names=names[400:][~seen[400:]]
    )
    return tmp_path


def test_import_info_export(crops, capsys):
    g = str(crops / "g")
    assert main(["face", "gallery", "import", str(crops / "crops.npz"), g]) == 0
    assert "imported 400 faces" in capsys.readouterr().out
    assert main(["face", "gallery", "info", g]) == 0
    out = capsys.readouterr().out
    assert "faces         400" in out and "exact (every face compared)" in out
    assert main(["face", "gallery", "import", str(crops / "crops.npz"), g]) == 2
    assert "already holds faces named" in capsys.readouterr().err  # nothing added twice
    assert len(Gallery.open(g)) == 400
    assert main(["face", "gallery", "export", g, str(crops / "out.npz")]) == 0
    assert "as embeddings of face crops" in capsys.readouterr().out
    a, b = np.load(crops / "crops.npz"), np.load(crops / "out.npz")
    np.testing.assert_array_equal(a["embeddings"], b["embeddings"])
    np.testing.assert_array_equal(a["names"], b["names"])
    assert main(["face", "gallery", "export", g, str(crops / "out.npz")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["face", "gallery", "info", str(crops / "missing")]) == 2
    assert "no gallery at" in capsys.readouterr().err


def test_search_names_known_people_and_not_strangers(crops, capsys):
    g = str(crops / "g")
    main(["face", "gallery", "import", str(crops / "crops.npz"), g])
    capsys.readouterr()
    for query, person in (("known", True), ("strangers", False)):
        out = crops / f"{query}.json"
        argv = ["face", "search", "--gallery", g, "--query", str(crops / f"{query}.npz")]
        assert main([*argv, "--threshold", "0.42", "--json", str(out)]) == 0
        results = json.loads(out.read_text())
        named = [r["person"] == r["query"].split("/")[0] for r in results]
        unknown = [r["person"] == "unknown" for r in results]
        if person:
            assert np.mean(named) > 0.9
        else:
            assert np.mean(unknown) > 0.9
    capsys.readouterr()
    # the same search on the .npz gallery gives the same results (both exact)
    argv = ["face", "search", "--query", str(crops / "known.npz"), "--top-k", "3"]
    assert main([*argv, "--gallery", g]) == 0
    on_gallery = capsys.readouterr().out
    assert main([*argv, "--gallery", str(crops / "crops.npz")]) == 0
    assert capsys.readouterr().out == on_gallery
    # label filters
    person = np.load(crops / "known.npz")["names"][0].split("/")[0]
    assert main([*argv, "--gallery", g, "--labels", person, "--json", str(crops / "f.json")]) == 0
    hits = [h["name"] for r in json.loads((crops / "f.json").read_text()) for h in r["results"]]
    assert hits and all(h.startswith(person + "/") for h in hits)
    assert main([*argv, "--gallery", str(crops / "crops.npz"), "--labels", person]) == 2


def test_cluster_a_gallery_scored_against_its_labels(crops, capsys):
    g = str(crops / "g")
    main(["face", "gallery", "import", str(crops / "crops.npz"), g])
    capsys.readouterr()
    runs = {}
    for source in (["--gallery", g], [str(crops / "crops.npz")]):
        for method in ("threshold", "chinese-whispers"):
            out = crops / "c.json"
            argv = ["face", "cluster", *source, "--method", method, "--threshold", "0.35"]
            assert main([*argv, "--labels", "--json", str(out), "--overwrite"]) == 0
            printed = capsys.readouterr().out
            assert f"{method} vs labels (400 labelled faces" in printed
            found = json.loads(out.read_text())
            assert 0 < found["scores"]["bcubed_f"] <= 1
            runs[(source[0], method)] = found["clusters"]
    # a gallery and its .npz cluster the same (exact graphs below 50,000 faces)
    assert runs[("--gallery", "threshold")] == runs[(str(crops / "crops.npz"), "threshold")]
    assert main(["face", "cluster", str(crops / "crops.npz"), "--gallery", g]) == 2
    assert "or --gallery" in capsys.readouterr().err


def test_remove_relabel_and_index(crops, capsys):
    g = str(crops / "g")
    main(["face", "gallery", "import", str(crops / "crops.npz"), g])
    labels = Gallery.open(g).labels
    a, b = labels[0], labels[1]
    assert main(["face", "gallery", "relabel", g, a, "--to", b]) == 0
    assert "merged into" in capsys.readouterr().out
    assert main(["face", "gallery", "remove", g, "--labels", b]) == 0
    gone = int((labels == a).sum() + (labels == b).sum())
    assert f"removed {gone} faces" in capsys.readouterr().out
    assert len(Gallery.open(g)) == 400 - gone
    assert main(["face", "gallery", "remove", g]) == 2
    assert main(["face", "gallery", "index", g, "--exact-below", "100", "--nprobe", "8"]) == 0
    assert "search: IVF16,PQ32x4fs: nprobe 8" in capsys.readouterr().out
    assert main(["face", "gallery", "index", g, "--reset"]) == 0
    assert "search: exact" in capsys.readouterr().out


def test_the_parser_names_every_clustering_method_without_importing_numpy():
    import subprocess
    import sys

    from resvision.tasks.face.clustering import METHODS
    from resvision.tools import gallery_cmd

    assert gallery_cmd.METHODS == METHODS
    code = (
        "import sys\nfrom resvision.tools.cli import build_parser\nbuild_parser()\n"
        "print('numpy' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_queries_of_another_model_are_refused(crops, capsys, caplog):
    from resvision.tasks.face import EmbeddingSource

    x = np.load(crops / "crops.npz")
    g = str(crops / "g")
    src = EmbeddingSource("128-d 112px sha256:aaaa", "none", True)
    np.savez(crops / "mine.npz", embeddings=x["embeddings"], names=x["names"], source=src.to_json())
    assert main(["face", "gallery", "import", str(crops / "mine.npz"), g]) == 0
    for model, alignment, code in (("sha256:bbbb", "none", 2), ("sha256:aaaa", "norm_crop", 0)):
        other = EmbeddingSource(f"128-d 112px {model}", alignment, True)
        q = crops / f"q-{alignment}.npz"
        np.savez(q, embeddings=x["embeddings"][:3], names=x["names"][:3], source=other.to_json())
        assert main(["face", "search", "--gallery", g, "--query", str(q)]) == code
    assert "(model differ)" in capsys.readouterr().err
    assert "aligned by norm_crop" in caplog.text  # another alignment: said, not refused
