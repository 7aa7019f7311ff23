"""``resvision face verify --embeddings`` (every pair of a labelled embeddings file) and the
``--json`` outputs of ``face search`` / ``face cluster``, on embeddings written here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from resvision.tasks.face.evaluation import embedding_pairs, evaluate_embeddings
from resvision.tools.cli import main


def _write(path, embeddings, names, labels=None):
    arrays = {"embeddings": np.asarray(embeddings, np.float32), "names": np.asarray(names)}
    if labels is not None:
        arrays["labels"] = np.asarray(labels)
    np.savez(path, **arrays)
    return str(path)


def _people(n_people=8, per_person=5, noise=0.3, seed=0):
    """Unit embeddings around one random centre per person."""
    g = np.random.default_rng(seed)
    centres = g.normal(size=(n_people, 64))
    emb = np.repeat(centres, per_person, 0) + noise * g.normal(size=(n_people * per_person, 64))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    names = [f"p{i // per_person}/{i % per_person}.jpg" for i in range(len(emb))]
    return emb, names


def test_verify_a_labelled_embeddings_file(tmp_path, capsys):
    emb, names = _people()
    path = _write(tmp_path / "crops.npz", emb, names)
    assert main(["face", "verify", "--embeddings", path]) == 0
    out = capsys.readouterr().out
    assert "40 faces of 8 people, 80 same-person pairs, 700 different-person pairs" in out
    assert "AUC 1.0000" in out  # well separated people
    assert float(out.split("crops.npz: accuracy ")[1].split()[0]) > 99
    # the figures are the protocol's on exactly those pairs
    first, second, same = embedding_pairs([n.split("/")[0] for n in names], 200_000)
    pairs = np.empty((2 * same.size, 64), np.float32)
    pairs[0::2], pairs[1::2] = emb[first], emb[second]
    r = evaluate_embeddings(pairs, same)
    assert f"AUC {r['auc']:.4f}" in out
    plot = tmp_path / "roc.png"
    assert main(["face", "verify", "--embeddings", path, "--plot", str(plot)]) == 0
    assert plot.stat().st_size > 0 and f"ROC curve -> {plot}" in capsys.readouterr().out
    assert main(["face", "verify", "--embeddings", path, "--plot", str(plot)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["face", "verify", "--embeddings", path, "--plot", path]) == 2
    assert "is one of the inputs" in capsys.readouterr().err
    # people who cannot be told apart (no structure) verify at chance, not 100%
    noise = np.random.default_rng(1).normal(size=emb.shape)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    assert main(["face", "verify", "--embeddings", _write(tmp_path / "n.npz", noise, names)]) == 0
    acc = float(capsys.readouterr().out.split("accuracy ")[1].split()[0])
    assert acc < 95


def test_a_gallery_of_photos_is_verified_by_its_labels(tmp_path, capsys):
    emb, _ = _people(n_people=3, per_person=4)
    photos = [f"group{i}.jpg" for i in range(12)]
    labels = ["ann"] * 4 + ["bob"] * 4 + ["cy"] * 4
    path = _write(tmp_path / "g.npz", emb, [f"{p}#0" for p in photos], labels)
    assert main(["face", "verify", "--embeddings", path]) == 0
    assert "12 faces of 3 people, 18 same-person pairs" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["a.jpg", "b.jpg", "c.jpg"], "does not say who each face is"),
        (["x/1.jpg", "x/2.jpg", "x/3.jpg"], "no different-person pair"),
        (["x/1.jpg", "y/2.jpg", "z/3.jpg"], "no same-person pair"),
        ([f"p{i % 2}/{i}.jpg" for i in range(6)], "only 15 pairs"),
    ],
)
def test_verify_refuses_what_it_cannot_verify(tmp_path, capsys, names, message):
    emb = np.eye(len(names), 8)
    path = _write(tmp_path / "e.npz", emb, names)
    assert main(["face", "verify", "--embeddings", path]) == 2
    err = capsys.readouterr().err
    assert message in err and "e.npz" in err


def test_verify_needs_one_source(tmp_path, capsys):
    assert main(["face", "verify"]) == 2
    assert "--embeddings FILE.npz" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["search", "cluster"])
def test_json_output_never_replaces_an_input_or_an_existing_file(tmp_path, capsys, command):
    emb, names = _people(n_people=3, per_person=3)
    path = _write(tmp_path / "e.npz", emb, names)
    before = (tmp_path / "e.npz").read_bytes()
    args = ["--gallery", path, "--query", path] if command == "search" else [path]
    assert main(["face", command, *args, "--json", path]) == 2
    assert "is one of the inputs" in capsys.readouterr().err
    assert (tmp_path / "e.npz").read_bytes() == before
    out = tmp_path / "out.json"
    out.write_text("keep")
    assert main(["face", command, *args, "--json", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_text() == "keep"
    assert main(["face", command, *args, "--json", str(out), "--overwrite"]) == 0
    assert json.loads(out.read_text())
