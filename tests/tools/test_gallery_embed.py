"""``face embed CROPS --gallery G`` on the bulk path (issues 19 and 20): a run killed with SIGKILL
leaves the gallery as its last completed add left it, is never mixed into silently, and
continues with ``--resume`` to exactly the gallery an uninterrupted run builds; a run killed
after its faces were added (before its parts went) is found done."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from resvision.tasks.engine.bulk import scan_log
from resvision.tasks.face import Gallery
from resvision.tools.cli import main

from .test_bulk_commands import _cli, _images, _kill_when, _run

pytestmark = pytest.mark.usefixtures("faiss_one_thread")


def _held(path) -> dict[str, np.ndarray]:
    with Gallery.open(path) as g:
        faces = g.faces(columns=("name", "label", "photos", "paths"))
        return {**faces, "embeddings": np.array(g.embeddings()), "source": g.source}


def test_face_embed_into_a_gallery_killed_then_resumed(face_run, tmp_path, capsys):
    first = _images(tmp_path / "first", 6, sizes=(28, 40))
    second = _images(tmp_path / "second", 60, seed=1, sizes=(28, 40))
    common = ["face", "embed", "--checkpoint", str(face_run), "--device", "cpu"]
    common += ["--batch-size", "2"]
    ref, g = tmp_path / "ref.gallery", tmp_path / "g.gallery"
    for gallery in (ref, g):
        _run(_cli(*common, str(first), "--gallery", str(gallery), "--workers", "0"))
    _run(_cli(*common, str(second), "--gallery", str(ref), "--workers", "0"))

    parts = tmp_path / "g.gallery.parts"
    _kill_when(_cli(*common, str(second), "--gallery", str(g), "--workers", "1"), parts, 5)
    done = sum(len(r.indices) for p in parts.glob("*.log") for r in scan_log(p))
    assert 0 < done < 60
    assert len(Gallery.open(g)) == 6  # the last completed add: the first folder
    # the same command without --resume refuses, in one line, before any work
    assert main([*common, str(second), "--gallery", str(g)]) == 2
    err = capsys.readouterr().err
    assert f"unfinished run of this command is in {parts} ({done} of 60 images" in err
    kept = tmp_path / "kept.parts"
    shutil.copytree(parts, kept)
    resumed = _run(_cli(*common, str(second), "--gallery", str(g), "--resume"))
    assert f"({done} done before this resume)" in resumed.stdout
    assert "60 faces added, now 66 faces" in resumed.stdout
    assert not parts.exists()
    a, b = _held(ref), _held(g)
    assert a["name"][0] == "first/p0/000.png" and a["label"][0] == "p0"
    assert a["source"] == b["source"] and a["source"].alignment == "none"
    for key in ("name", "label", "photos", "embeddings"):
        np.testing.assert_array_equal(a[key], b[key])  # to the bit, in input order

    # a run killed after its faces were added but before its parts went: --resume finds it done
    shutil.copytree(kept, parts)
    again = _run(_cli(*common, str(second), "--gallery", str(g), "--resume"))
    assert "nothing new to add" in again.stdout and "60 images already in the gallery" in (
        again.stdout
    )
    assert not parts.exists() and len(Gallery.open(g)) == 66
