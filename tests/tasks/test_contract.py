"""One contract for every task (smp's BaseModelTester for tasks): a few training steps, an
evaluation, a prediction through the task's predictor, an ONNX export checked against PyTorch,
and a resume that continues exactly where the run stopped.

A new task adds its tiny configuration to ``TINY`` (``tiny.py``) and its predictor call to
``_predict``.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from resvision.tasks.engine.checkpoint import load_checkpoint
from resvision.tasks.engine.config import apply_overrides, merge
from resvision.tasks.engine.evaluation import evaluate_checkpoint
from resvision.tasks.engine.loop import train
from resvision.tools.tasks import TASKS, get_task

from .tiny import COMMON, TINY


def _package(name: str) -> str:
    """The task's package (``resvision.tasks.detection``) from the command table."""
    return TASKS[name].split(":")[0].rsplit(".", 1)[0]


def test_every_task_has_a_tiny_configuration():
    assert set(TINY) == set(TASKS)


def _config(name: str, out, iterations: int):
    preset, overrides = TINY[name]
    task = get_task(name)
    cfg = task.presets()[preset]()
    # a constant learning rate: a run of 2 steps follows the same schedule as one of 4
    extra = [f"schedule.iterations={iterations}", "schedule.warmup_iterations=0"]
    extra += ["schedule.policy=constant"]
    extra += [f"runtime.eval_period={iterations}", f"runtime.output_dir={out}"]
    return task, apply_overrides(cfg, [*overrides, *COMMON, *extra])


def _predict(name: str, run):
    """The task's predictor on one random photo-sized image."""
    module = importlib.import_module(f"{_package(name)}.inference")
    image = (np.random.default_rng(0).random((70, 90, 3)) * 255).astype(np.uint8)
    if name == "segmentation":
        (labels,) = module.Segmenter.from_checkpoint(run, device="cpu").predict(image)
        assert labels.shape == (70, 90)
    elif name == "detection":
        (result,) = module.Detector.from_checkpoint(run, device="cpu").predict(image)
        assert result["boxes"].shape[1:] == (4,)
    elif name == "face-detection":
        (result,) = module.FaceDetector.from_checkpoint(run, device="cpu").predict(image)
        assert result["boxes"].shape[1:] == (4,) and result["landmarks"].shape[1:] == (5, 2)
    else:
        vectors = module.Embedder.from_checkpoint(run, device="cpu").embed([image, image])
        assert vectors.shape == (2, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1)


def _export(name: str, run, path) -> None:
    model_module = importlib.import_module(f"{_package(name)}.model")
    export = importlib.import_module(f"{_package(name)}.export")
    model, cfg, meta = model_module.load_model(run, device="cpu")
    assert isinstance(meta, dict)
    if name == "segmentation":
        export.export(model, path, size=(64, 64))
        image = (np.random.default_rng(1).random((48, 80, 3)) * 255).astype(np.uint8)
        (report,) = export.check(model, path, [image])
        assert report["label_agreement"] == 1.0 and report["max_abs_diff"] < 1e-3
    elif name == "detection":
        size = (cfg.model.test.min_size, cfg.model.test.max_size)
        export.export(model, path, size)
        batch = (np.random.default_rng(1).random((2, 3, *size)) * 255).astype(np.float32)
        (report,) = export.check(model, path, [batch])
        assert report["same_count"] and report["same_labels"] and report["max_box_diff"] < 1e-2
    elif name == "face-detection":
        export.export(model, path)
        batch = (np.random.default_rng(1).random((2, 3, 64, 80)) * 255).astype(np.float32)
        (report,) = export.check(model, path, [batch])
        assert report["same_count"] and report["max_box_diff"] < 1e-2
        assert report["max_landmark_diff"] < 1e-2
    else:
        export.export(model, path, size=cfg.data.image_size)
        for report in export.check(model, path, size=cfg.data.image_size):
            assert report["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("name", sorted(TINY))
def test_task_contract(name, tmp_path):
    """Train 4 steps; evaluate the checkpoint; predict; export; and a run stopped after 2
    steps and resumed ends with bit-identical weights (same machine, same process)."""
    task, cfg = _config(name, tmp_path / "full", 4)
    result = train(task, cfg)
    assert result.iteration == 4 and task.main_metric in {
        k.split("/", 1)[1] for k in result.metrics
    }
    state = load_checkpoint(tmp_path / "full" / "last.pt", task=name)
    again = evaluate_checkpoint(task, merge(task.config_class(), state["config"]), state)
    assert again[task.main_metric] == pytest.approx(result.metrics[f"val/{task.main_metric}"])
    _predict(name, tmp_path / "full")
    _export(name, tmp_path / "full", tmp_path / "model.onnx")

    task, first = _config(name, tmp_path / "resumed", 2)
    train(task, first)
    task, rest = _config(name, tmp_path / "resumed", 4)
    train(task, rest, resume=tmp_path / "resumed" / "last.pt")
    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
