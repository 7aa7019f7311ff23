"""The face-detection commands and the photo pipeline as a user runs them: predict writes drawn
faces and a json, export checks itself, ``face embed --detector`` writes a gallery (a photo
without faces is not an error, a corrupt photo is named and counted, faces too small to align
are named and skipped), ``face search`` / ``face cluster`` draw labelled photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resvision.datasets.face_detection import SyntheticFaceScenes
from resvision.tasks.engine.config import apply_overrides
from resvision.tasks.engine.loop import train
from resvision.tools.cli import main
from resvision.tools.tasks import get_task

TINY = {
    "face-detection": (
        "retinaface_r18_synthetic",
        [
            *("data.synthetic_train=4", "data.synthetic_val=2", "data.batch_size=2"),
            *("data.image_size=64", "data.synthetic_min_side=64", "data.synthetic_max_side=80"),
            *("model.fpn_channels=16", "model.test.pre_nms_top_k=300"),
            "model.test.max_detections=50",
        ],
    ),
    "face": (
        "iresnet18_synthetic",
        [
            *("data.synthetic_identities=8", "data.synthetic_images=2"),
            *("data.synthetic_val_identities=4", "data.synthetic_val_pairs=20"),
            *("data.batch_size=4", "model.embedding_size=32"),
        ],
    ),
}


def _run(tmp_path_factory, name: str) -> Path:
    preset, overrides = TINY[name]
    out = tmp_path_factory.mktemp(name)
    task = get_task(name)
    extra = ["schedule.iterations=2", "schedule.warmup_iterations=0", "runtime.eval_period=2"]
    extra += ["runtime.tensorboard=false", f"runtime.output_dir={out}"]
    train(task, apply_overrides(task.presets()[preset](), [*overrides, *extra]))
    return out


# the landmarks of a face in its box, as offsets from the box centre in box sides
FACE_SHAPE = np.array([[-0.18, -0.12], [0.18, -0.12], [0.0, 0.05], [-0.15, 0.2], [0.15, 0.2]])


def _crafted(run: Path, path: Path, *, face: bool, spread: float = 1.0) -> Path:
    """The run's checkpoint with its heads set by hand: with ``face``, every prior is a face
    (box = the prior, landmarks in FACE_SHAPE scaled by ``spread``); else no prior is."""
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    model = state["model"]
    for key in [k for k in model if k.split(".")[0] in ("class_head", "box_head", "landmark_head")]:
        model[key] = torch.zeros_like(model[key])
    for i in range(3):
        model[f"class_head.{i}.bias"] = torch.tensor([-8.0, 8.0] * 2 if face else [8.0, -8.0] * 2)
        offsets = torch.tensor(FACE_SHAPE * spread / 0.1, dtype=torch.float32).reshape(-1)
        model[f"landmark_head.{i}.bias"] = offsets.repeat(2)
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    det = _run(tmp_path_factory, "face-detection")
    folder = tmp_path_factory.mktemp("crafted")
    return {
        "detector": det,
        "face": _run(tmp_path_factory, "face"),
        "faces": _crafted(det, folder / "faces.pt", face=True),
        "none": _crafted(det, folder / "none.pt", face=False),
        "tiny": _crafted(det, folder / "tiny.pt", face=True, spread=0.05),
    }


@pytest.fixture
def photos(tmp_path) -> Path:
    """Synthetic group photos: alice/1.png, alice/2.png, bob/1.png."""
    root = tmp_path / "photos"
    scenes = SyntheticFaceScenes(seed=3, min_side=64, max_side=80)
    for i, rel in enumerate(("alice/1.png", "alice/2.png", "bob/1.png")):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(scenes.scene(i).image).save(root / rel)
    return root


def _embed(runs, photos, out, detector="faces", *extra) -> int:
    argv = ["face", "embed", str(photos), "--checkpoint", str(runs["face"]), "--out", str(out)]
    return main([*argv, "--detector", str(runs[detector]), "--device", "cpu", *extra])


def test_predict_writes_drawn_faces_and_a_json(runs, photos, tmp_path, capsys, caplog):
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "pred"
    argv = ["predict", "face-detection", str(photos), "--checkpoint", str(runs["faces"])]
    assert main([*argv, "--out", str(out), "--device", "cpu"]) == 0
    assert "broken.jpg" in caplog.text and "1 unreadable input skipped" in capsys.readouterr().out
    drawn = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
    assert drawn == ["alice/1.jpg", "alice/2.jpg", "bob/1.jpg"]
    records = json.loads((out / "faces.json").read_text())
    face = records[0]["faces"][0]
    assert len(face["box"]) == 4 and np.array(face["landmarks"]).shape == (5, 2)
    assert main([*argv, "--out", str(photos / "pred")]) == 2  # never into the input folder


def test_export_checks_itself(runs, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    argv = ["export", "face-detection", "--checkpoint", str(runs["detector"]), "--out", str(out)]
    assert main(argv) == 0 and out.is_file()
    assert "same count True" in capsys.readouterr().out
    assert main(argv) == 2  # an existing output needs --overwrite


def test_face_embed_with_a_detector_writes_a_gallery(runs, photos, tmp_path, capsys, caplog):
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "gallery.npz"
    assert _embed(runs, photos, out) == 0
    printed = capsys.readouterr().out
    assert "1 unreadable input skipped" in printed and "broken.jpg" in caplog.text
    g = np.load(out)
    assert set(g["photos"]) == {"alice/1.png", "alice/2.png", "bob/1.png"}
    n = len(g["photos"])
    assert g["embeddings"].shape == (n, 32) and g["landmarks"].shape == (n, 5, 2)
    assert g["boxes"].shape == (n, 4) and g["scores"].shape == (n,) and n > 3
    assert set(g["labels"]) == {"alice", "bob"} and g["names"][0].endswith("#0")
    assert all(Path(p).is_file() for p in g["paths"])
    one = tmp_path / "largest.npz"
    assert _embed(runs, photos, one, "faces", "--largest-face-only") == 0
    assert sorted(np.load(one)["photos"]) == ["alice/1.png", "alice/2.png", "bob/1.png"]
    sized = tmp_path / "sized.npz"
    assert _embed(runs, photos, sized, "faces", "--min-face-size", "60") == 0
    assert "below --min-face-size 60" in capsys.readouterr().out
    boxes = np.load(sized)["boxes"]
    assert (np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= 60).all()


def test_photos_without_faces_are_not_an_error(runs, photos, tmp_path, capsys):
    out = tmp_path / "none.npz"
    assert _embed(runs, photos, out, "none") == 0
    assert "0 faces (3 photos without a face)" in capsys.readouterr().out
    g = np.load(out)
    assert len(g["embeddings"]) == 0 and sorted(g["photos_without_faces"]) == [
        "alice/1.png",
        "alice/2.png",
        "bob/1.png",
    ]


def test_faces_too_small_to_align_are_named_and_skipped(runs, photos, tmp_path, capsys, caplog):
    out = tmp_path / "tiny.npz"
    assert _embed(runs, photos, out, "tiny") == 0
    assert "too small to align skipped" in capsys.readouterr().out
    assert "alice/1.png: face at [" in caplog.text and "too small to align" in caplog.text
    g = np.load(out)
    eyes = np.linalg.norm(g["landmarks"][:, 1] - g["landmarks"][:, 0], axis=1)
    assert (eyes >= 3).all()


def test_search_and_cluster_draw_labelled_photos(runs, photos, tmp_path, capsys):
    gallery = tmp_path / "gallery.npz"
    assert _embed(runs, photos, gallery, "faces", "--largest-face-only") == 0
    drawn = tmp_path / "search"
    argv = ["face", "search", "--gallery", str(gallery), "--query", str(gallery)]
    assert main([*argv, "--top-k", "1", "--draw", str(drawn)]) == 0
    assert sorted(p.relative_to(drawn).as_posix() for p in drawn.rglob("*.jpg")) == [
        "alice/1.jpg",
        "alice/2.jpg",
        "bob/1.jpg",
    ]
    clusters = tmp_path / "clusters"
    assert main(["face", "cluster", str(gallery), "--draw", str(clusters)]) == 0
    assert len(list(clusters.rglob("*.jpg"))) == 3 and "cluster" in capsys.readouterr().out
    assert main(["face", "cluster", str(gallery), "--draw", str(photos / "x")]) == 2
    # embeddings of face crops (no detector) cannot be drawn: no boxes
    crops = tmp_path / "crops.npz"
    np.savez(crops, embeddings=np.eye(2, dtype=np.float32), names=np.array(["a", "b"]))
    assert main(["face", "cluster", str(crops), "--draw", str(tmp_path / "c2")]) == 2
    assert "needs a gallery of photos" in capsys.readouterr().err


def test_the_detector_takes_the_same_inputs_as_every_predictor(runs, photos):
    from resvision.tasks.face_detection.inference import FaceDetector

    det = FaceDetector.from_checkpoint(runs["faces"], device="cpu")
    path = photos / "bob" / "1.png"
    image = Image.open(path)
    array = np.asarray(image)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)
    results = [det.predict(x)[0] for x in (image, array, path, tensor)]
    for r in results[1:]:  # exact: the same pixels run through the same operations and shapes
        assert np.array_equal(r["boxes"], results[0]["boxes"])
        assert np.array_equal(r["landmarks"], results[0]["landmarks"])


def test_a_gallery_of_photos_as_a_user_builds_it(runs, photos, tmp_path, tmp_path_factory, capsys):
    """``face embed --detector --gallery``: a folder, the same folder again (skipped), a second
    folder, a person removed, photos searched (a known person named, an unknown one not),
    the gallery clustered and drawn; another model's faces refused; the .npz path agrees."""
    import shutil

    from resvision.tasks.face import Gallery

    g = tmp_path / "people.gallery"
    argv = ["face", "embed", "--checkpoint", str(runs["face"]), "--device", "cpu"]
    det = ["--detector", str(runs["faces"]), "--largest-face-only"]
    assert main([*argv, str(photos), *det, "--gallery", str(g)]) == 0
    assert "3 faces (0 photos without a face)" in capsys.readouterr().out
    first = Gallery.open(g)
    assert len(first) == 3 and sorted(set(first.labels)) == ["alice", "bob"]
    assert first.names[0] == "photos/alice/1.png#0"
    assert first.source.alignment == "norm_crop" and first.source.flip
    first.close()
    assert main([*argv, str(photos), *det, "--gallery", str(g)]) == 0
    assert "3 photos already in the gallery skipped" in capsys.readouterr().out
    more = tmp_path / "more"
    shutil.copytree(photos / "alice", more / "carol")
    assert main([*argv, str(more), *det, "--gallery", str(g)]) == 0
    assert "(now 5 faces)" in capsys.readouterr().out
    assert main(["face", "gallery", "remove", str(g), "--labels", "bob"]) == 0
    assert "removed 1 face" in capsys.readouterr().out
    # the .npz of the same photos equals the gallery's faces of them
    npz = tmp_path / "q.npz"
    assert main([*argv, str(photos), *det, "--out", str(npz)]) == 0
    capsys.readouterr()
    assert json_source(npz) == Gallery.open(g).source
    found = Gallery.open(g).faces(["photos/alice/1.png#0"])
    np.testing.assert_array_equal(found["boxes"][0], np.load(npz)["boxes"][0])
    search = ["face", "search", "--gallery", str(g), "--query", str(npz), "--top-k", "1"]
    drawn = tmp_path_factory.mktemp("drawn")  # outside the photos' common folder
    assert main([*search, "--threshold", "0.999", "--draw", str(drawn), "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert "alice/1.png#0: " in out and "-> alice" in out and "bob/1.png#0: " in out
    assert out.split("bob/1.png#0: ")[1].splitlines()[0].endswith("-> unknown")
    assert len(list(drawn.rglob("*.jpg"))) == 3
    clusters = tmp_path_factory.mktemp("clusters") / "out"
    cluster = ["face", "cluster", "--gallery", str(g), "--labels", "--method", "chinese-whispers"]
    assert main([*cluster, "--threshold", "0.999", "--draw", str(clusters)]) == 0
    out = capsys.readouterr().out
    assert "4 faces -> " in out and "BCubed precision" in out
    assert len(list(clusters.rglob("*.jpg"))) == 4
    # faces of the same model without flip are refused before any photo is read
    assert main([*argv, str(more), *det, "--no-flip", "--gallery", str(g)]) == 2
    assert "flip differ" in capsys.readouterr().err and len(Gallery.open(g)) == 4
    assert main([*argv, str(photos), *det, "--gallery", str(g), "--out", str(npz)]) == 2
    assert "one of them" in capsys.readouterr().err


def json_source(npz):
    from resvision.tasks.face import EmbeddingSource

    return EmbeddingSource.from_json(str(np.load(npz)["source"]))
