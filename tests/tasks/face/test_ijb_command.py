"""``resvision face ijb`` end to end on a generated IJB-style folder (synthetic identities drawn
as loose crops with their exact landmarks, InsightFace's file layout, one image missing and one
corrupt), and IJB as a validation metric of ``resvision eval face``."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil

import numpy as np
import pytest

from resvision.tasks.face import ijb
from resvision.tools.cli import main

from . import ijb_reference as ref
from .ijb_generated import generate, write_ijb_folder

pytest.importorskip("sklearn", reason="scikit-learn (the dev extra) is the reference's ROC")

KEYS = [
    "TAR@FAR=1e-06",
    "TAR@FAR=1e-05",
    "TAR@FAR=0.0001",
    "TAR@FAR=0.001",
    "TAR@FAR=0.01",
    "TAR@FAR=0.1",
    "AUC",
    "TPIR@FPIR=0.01",
    "TPIR@FPIR=0.1",
    "rank1",
    "rank5",
    "rank10",
]
MISSING, CORRUPT = 4, 9  # rows of the meta file without a readable image


@pytest.fixture(scope="module")
def ijb_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ijb") / "IJBC"
    protocol = generate(gallery_templates=(6, 6), probe_templates=36, images=150, dim=8, seed=3)
    names = write_ijb_folder(root, protocol)
    (root / "loose_crop" / names[MISSING]).unlink()
    (root / "loose_crop" / names[CORRUPT]).write_bytes(b"\xff\xd8 truncated")
    return root, protocol


def _run(*argv) -> int:
    return main(["face", "ijb", "--target", "IJBC", *map(str, argv)])


@pytest.fixture(scope="module")
def command_run(trained_run, ijb_root, tmp_path_factory):
    """One run of the command on the folder: its outputs and what it printed."""
    root, _ = ijb_root
    out = tmp_path_factory.mktemp("ijb_out")
    argv = ["--root", root, "--checkpoint", trained_run, "--out", out / "out"]
    argv += ["--save-features", out / "features.npy", "--workers", "0"]
    printed, warnings = io.StringIO(), []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("resvision").addHandler(handler)
    try:
        with contextlib.redirect_stdout(printed):
            assert _run(*argv) == 0
    finally:
        logging.getLogger("resvision").removeHandler(handler)
    return out, argv, printed.getvalue() + "\n".join(warnings)


def test_the_command_reports_the_scripts_figures(ijb_root, command_run, tmp_path, capsys):
    root, p = ijb_root
    folder, argv, text = command_run
    out = folder / "out"
    assert "embedded 148 images, 2 unreadable images skipped" in text
    assert f"skipped {MISSING + 1}.jpg: image file" in text and "does not exist" in text
    assert f"skipped {CORRUPT + 1}.jpg: image file" in text and "cannot be decoded" in text
    assert "36 genuine" in text and "TAR %" in text and "rank-1" in text
    report = json.loads((out / "ijb.json").read_text())
    assert list(report)[: len(KEYS)] == KEYS
    assert report["counts"] == {
        "images": 150,
        "images_used": 148,
        "templates": 48,
        "pairs": len(p.labels),
        "genuine_pairs": 36,
    }
    # the saved features: the model's flip-summed embeddings, NaN where no image was read
    saved = folder / "features.npy"
    features = np.load(saved)
    lost = ~np.isfinite(features).all(1)
    assert features.shape == (150, 128) and np.flatnonzero(lost).tolist() == [MISSING, CORRUPT]
    norms = np.linalg.norm(features[~lost], axis=1)
    assert norms.std() > 0.01 * norms.mean()  # not normalized: lengths weigh the images
    # every figure is what InsightFace's loops compute on those features
    keep = ~lost
    tars, auc, scores, _, _ = ref.evaluate_11(
        features[keep], p.faceness[keep], p.templates[keep], p.medias[keep],
        p.pairs[:, 0], p.pairs[:, 1], p.labels,
    )  # fmt: skip
    assert [report[k] for k in KEYS[:6]] == [float(t) for t in tars]
    assert report["AUC"] == auc
    x = ref.prepare_features(features[keep], p.faceness[keep])
    one_n = ref.run_1n(x, p.templates[keep], p.medias[keep], *p.galleries, p.probes)
    assert [report[k] for k in KEYS[7:]] == [one_n[k] for k in KEYS[7:]]
    assert np.abs(np.load(out / "scores.npy") - scores).max() <= 4e-16
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 0 < report["TAR@FAR=0.1"] < 1 and 0 < report["rank1"] <= 1

    # outputs are never replaced without --overwrite; the error is one line
    assert _run(*argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert "already exist" in err[0] and "--overwrite" in err[0] and len(err) == 2
    # the saved features give the same figures without a model
    again = tmp_path / "again"
    assert _run("--root", root, "--features", saved, "--out", again) == 0
    second = json.loads((again / "ijb.json").read_text())
    assert {k: second[k] for k in KEYS} == {k: report[k] for k in KEYS}
    assert "2 images without a feature (NaN rows) left out" in capsys.readouterr().out

    # ijb_evals.py's .npz of embeddings and mirrored embeddings: summed unless --no-flip
    half = np.where(lost[:, None], np.nan, features / 2).astype(np.float32)
    np.savez(tmp_path / "embs.npz", embs=half, embs_f=half)
    assert _run("--root", root, "--features", tmp_path / "embs.npz", "--no-norm") == 0
    shown = capsys.readouterr().out
    normalized = ijb.evaluate_ijb(_meta(root), half + half, normalize=True)
    assert f"{100 * normalized.metrics['AUC']:.2f}" in shown
    assert _run("--root", root, "--features", tmp_path / "embs.npz", "--no-flip") == 0


def _meta(root):
    from resvision.datasets.face.ijb import read_ijb_meta

    return read_ijb_meta(root, "IJBC")


def test_ijb_as_a_validation_metric(trained_run, ijb_root, command_run, tmp_path):
    """``ijb.root`` adds the folder's figures to the evaluation that training runs, through the
    same protocol as the command (here via ``resvision eval``: the same evaluator)."""
    root, _ = ijb_root
    metrics = tmp_path / "metrics.json"
    argv = ["eval", "face", "--checkpoint", trained_run, "--json", metrics]
    argv += ["--set", f"ijb.root={root}", "data.synthetic_val_pairs=10"]
    assert main(list(map(str, argv))) == 0
    got = json.loads(metrics.read_text())
    assert "acc" in got and "synthetic_1/auc" in got  # the verification set is still there
    features = np.load(command_run[0] / "features.npy")
    expected = ijb.evaluate_ijb(_meta(root), features).metrics
    for key in KEYS:  # other batches, so the last bits of an embedding may differ
        assert got[f"ijbc/{key}"] == pytest.approx(expected[key], abs=1 / 36 + 1e-9), key
    assert got["ijbc/AUC"] == pytest.approx(expected["AUC"], abs=1e-3)


def test_errors_are_one_line_and_name_the_file(ijb_root, tmp_path, capsys):
    root, _ = ijb_root
    rows = np.random.default_rng(0).normal(size=(150, 8)).astype(np.float32)
    np.save(tmp_path / "short.npy", rows[:149])
    np.save(tmp_path / "ok.npy", rows)
    broken = tmp_path / "broken"
    shutil.copytree(root / "meta", broken / "meta")
    (broken / "meta" / "ijbc_template_pair_label.txt").unlink()
    cases = [
        (["--root", tmp_path / "none", "--features", tmp_path / "ok.npy"], "is not a folder"),
        (["--root", broken, "--features", tmp_path / "ok.npy"], "ijbc_template_pair_label.txt"),
        (["--root", root, "--features", tmp_path / "short.npy"], "ijbc_name_5pts_score.txt"),
        (["--root", root, "--features", tmp_path / "ok.npy", "--no-flip"], "--no-flip"),
        (["--root", root, "--features", tmp_path / "ok.npy", "--out", root / "x"], "input folder"),
        (
            ["--root", root, "--features", tmp_path / "ok.npy", "--save-features", "f.npy"],
            "exist already",
        ),
    ]
    for argv, expected in cases:
        assert _run(*argv) == 2, argv
        err = capsys.readouterr().err.splitlines()
        assert expected in err[0] and len(err) == 2, (argv, err)
    assert "149" in _error_of(["--root", root, "--features", tmp_path / "short.npy"], capsys)
    assert not (root / "x").exists()


def _error_of(argv, capsys) -> str:
    assert _run(*argv) == 2
    return capsys.readouterr().err.splitlines()[0]


def test_a_killed_embedding_pass_resumes_to_the_uninterrupted_features(
    trained_run, ijb_root, tmp_path, capsys
):
    """The embedding pass is the bulk path's: SIGKILL part-way, the same command refuses to
    start again without --resume, and --resume writes the features of an uninterrupted pass."""
    import random

    from resvision.tasks.engine.bulk import scan_log

    from ...tools.test_bulk_commands import _cli, _kill_when
    from ...tools.test_bulk_commands import _run as run_cli

    root, _ = ijb_root
    features, parts = tmp_path / "features.npy", tmp_path / "features.npy.parts"
    common = ["face", "ijb", "--target", "IJBC", "--root", str(root), "--device", "cpu"]
    common += ["--checkpoint", str(trained_run), "--batch-size", "8"]
    ref = tmp_path / "ref.npy"
    run_cli(_cli(*common, "--save-features", str(ref), "--workers", "0"))
    common += ["--save-features", str(features), "--out", str(tmp_path / "out")]

    _kill_when(_cli(*common, "--workers", "1"), parts, random.randint(1, 15))
    done = sum(len(r.indices) for p in parts.glob("*.log") for r in scan_log(p))
    assert not features.exists() and 0 < done < 150
    assert main(common) == 2  # an unfinished pass is not started over silently
    assert "--resume" in capsys.readouterr().err
    resumed = run_cli(_cli(*common, "--workers", "1", "--resume"))
    assert "embedded 148 images, 2 unreadable images skipped" in resumed.stdout
    assert np.array_equal(np.load(features), np.load(ref), equal_nan=True)  # to the bit
    assert np.isnan(np.load(ref)).all(1).nonzero()[0].tolist() == [MISSING, CORRUPT]
    assert not parts.exists()
