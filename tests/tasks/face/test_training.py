"""Training on synthetic identities; the face pipeline commands; export."""

from __future__ import annotations

import json

import numpy as np
import pytest

from resvision.tools.cli import main


def test_learning_raises_held_out_verification_accuracy(trained_run):
    records = [json.loads(x) for x in (trained_run / "metrics.jsonl").read_text().splitlines()]
    acc = [r["val/acc"] for r in records if "val/acc" in r]
    assert len(acc) == 3
    assert (
        acc[-1] > 0.7 and acc[-1] > acc[0]
    )  # chance is 0.5; these identities were never trained on
    final = [r for r in records if "val/acc" in r][-1]
    assert final["val/synthetic_1/auc"] > 0.75


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """An identity folder of synthetic photos (4 people x 3) and an LFW-style pairs.txt."""
    from PIL import Image

    from resvision.datasets.face import SyntheticFaces

    root = tmp_path_factory.mktemp("faces")
    ds = SyntheticFaces(4, 3, image_size=112, seed=11)
    lines = ["1 4"]
    for person in range(4):
        (root / f"p{person}").mkdir()
        for shot in range(3):
            Image.fromarray(ds.render(person, shot)).save(
                root / f"p{person}" / f"p{person}_{shot + 1:04d}.jpg"
            )
        for i, j in ((1, 2), (1, 3), (2, 3)):  # every same-person pair, and as many others
            lines.append(f"p{person} {i} {j}")
            lines.append(f"p{person} {i} p{(person + i) % 4} {j}")
    (root.parent / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root


def test_embed_search_cluster_verify(trained_run, faces, tmp_path, capsys):
    npz = tmp_path / "gallery.npz"
    assert (
        main(["face", "embed", str(faces), "--checkpoint", str(trained_run), "--out", str(npz)])
        == 0
    )
    data = np.load(npz)
    assert data["embeddings"].shape[0] == 12 and np.allclose(
        np.linalg.norm(data["embeddings"], axis=1), 1, atol=1e-5
    )
    assert (
        main(
            [
                "face",
                "search",
                "--gallery",
                str(npz),
                "--query",
                str(npz),
                "--top-k",
                "3",
                "--threshold",
                "0.5",
                "--json",
                str(tmp_path / "s.json"),
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "s.json").read_text())
    assert results[0]["results"][0]["name"] == results[0]["query"]  # each face finds itself first
    assert (
        main(
            ["face", "cluster", str(npz), "--threshold", "0.6", "--json", str(tmp_path / "c.json")]
        )
        == 0
    )
    clusters = json.loads((tmp_path / "c.json").read_text())["clusters"]
    assert sum(len(c) for c in clusters) == 12
    assert (
        main(
            [
                "face",
                "verify",
                "--checkpoint",
                str(trained_run),
                "--pairs",
                str(faces.parent / "pairs.txt"),
                "--root",
                str(faces),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "accuracy" in out and "TAR@FAR1E-1" in out and "threshold cosine" in out
    assert "nan" not in out  # 24 pairs: every one of the 10 folds has some


def test_embedder_api_with_alignment(trained_run, faces):
    from resvision.datasets.face import ARCFACE_TEMPLATE
    from resvision.tasks.face import Embedder

    emb = Embedder.from_checkpoint(trained_run, device="cpu")
    image = np.asarray(
        __import__("PIL.Image", fromlist=["Image"]).open(faces / "p0" / "p0_0001.jpg")
    )
    plain = emb.embed([image])
    aligned = emb.embed(
        [image], landmarks=[ARCFACE_TEMPLATE]
    )  # landmarks at the template: identity warp
    # the warp gives back the very pixels, so the same network runs on the same input: the
    # tight tolerance is no cross-kernel comparison and holds on any CPU
    assert plain.shape == (1, 128) and np.allclose(plain, aligned, atol=1e-5)


def test_convert_command_round_trip(faces, tmp_path):
    assert (
        main(["face", "convert", str(faces), str(tmp_path / "rec" / "train.rec"), "--to", "rec"])
        == 0
    )
    assert (
        main(
            [
                "face",
                "convert",
                str(tmp_path / "rec" / "train.rec"),
                str(tmp_path / "back"),
                "--to",
                "folder",
            ]
        )
        == 0
    )
    assert len(list((tmp_path / "back").rglob("*.jpg"))) == 12


def test_export_onnx_dynamic_batch(trained_run, tmp_path, capsys):
    assert (
        main(
            ["export", "face", "--checkpoint", str(trained_run), "--out", str(tmp_path / "e.onnx")]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "batch 1:" in out and "batch 5:" in out and "wrote" in out
