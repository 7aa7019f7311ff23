"""``resvision depth gradients``: gradient norms block by block, residual vs plain."""

from __future__ import annotations

import pytest

from resvision.studies.residual import gradients as G
from resvision.tools.cli import main


def test_plain_net_gradients_span_orders_of_magnitude_more_than_residual():
    images, labels = G.load_batch(None, size=32, batch_size=8, seed=0)
    results = G.compare("cifar_resnet56", images, labels, plain=True, seed=0)
    residual, plain = results["residual"], results["plain"]
    assert len(residual) == len(plain) == 27  # (56 - 2) / 6 blocks per stage, 3 stages
    assert [r.stage for r in residual[:9]] == ["c2"] * 9 and residual[-1].stage == "c4"
    assert all(r.params > 0 and r.input > 0 for r in residual + plain)
    # without shortcuts the gradient grows block by block toward the input (batch statistics)
    assert G.ratios(plain)["params"] > 20 * G.ratios(residual)["params"]
    assert (
        G.span_decades([r.params for r in plain]) > G.span_decades([r.params for r in residual]) + 1
    )
    # the same random state: the first forward of both nets saw identical weights
    assert results["residual"][0].params != results["plain"][0].params


def test_gradients_command_prints_table_ratios_and_writes_the_plot(tmp_path, capsys):
    out = tmp_path / "g.png"
    argv = ["depth", "gradients", "--backbone", "cifar_resnet20", "--plain", "--batch-size", "4"]
    assert main([*argv, "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "residual |grad params|" in text and "plain |grad input|" in text
    assert "plain: first/last block" in text and "residual: first/last block" in text
    assert out.is_file() and out.stat().st_size > 10_000
    # never overwritten without --overwrite
    assert main([*argv, "--output", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--output", str(out), "--overwrite", "--eval-bn"]) == 0
    assert "running statistics" in capsys.readouterr().out


def test_gradients_on_photos_and_clear_errors(voc_sample, tmp_path, capsys):
    argv = ["depth", "gradients", "--backbone", "cifar_resnet20", "--batch-size", "3"]
    folder = str(voc_sample / "JPEGImages")
    assert main([*argv, "--images", folder, "--output", str(tmp_path / "p.png")]) == 0
    assert f"3 images of 32x32 ({folder})" in capsys.readouterr().out
    assert main(["depth", "gradients", "--backbone", "resnet18", "--plain"]) == 2
    assert "plain=True is not available for resnet18" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        G.load_batch(tmp_path / "empty", size=32, batch_size=2)
