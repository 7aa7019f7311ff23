"""Figures are written whole (atomically) and closed: the run plots, the confusion matrix and the
residual study's figures all go through ``save_figure``."""

from __future__ import annotations

import json

import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

from resvision.tasks.engine.plots import plot_run, save_figure  # noqa: E402


def test_save_figure_writes_a_whole_png_and_closes_the_figure(tmp_path):
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "sub" / "fig.png", dpi=50)
    assert path == tmp_path / "sub" / "fig.png"
    assert Image.open(path).size == (100, 50)
    assert not plt.fignum_exists(fig.number)
    assert [p.name for p in path.parent.iterdir()] == ["fig.png"]  # no temporary left


def test_a_failed_save_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "fig.notaformat"
    path.write_bytes(b"old")
    fig, _ = plt.subplots()
    with pytest.raises(ValueError, match="notaformat"):
        save_figure(fig, path)
    plt.close(fig)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["fig.notaformat"]


def test_plot_run_writes_loss_lr_and_val(tmp_path):
    rows = [{"iteration": i, "loss": 1.0 / i, "lr": 0.1, "val/AP": 0.1 * i} for i in range(1, 5)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    written = plot_run(tmp_path)
    assert [p.name for p in written] == ["loss.png", "lr.png", "val.png"]
    assert all(Image.open(p).format == "PNG" for p in written)
