"""``resvision benchmark TASK ...``: the benchmark programs of the source tree's ``benchmarks/``
(they are not installed; each parses its own options: ``resvision benchmark TASK --help``)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from .tasks import Command

PACKAGE = "resvision_benchmarks"


def benchmarks_folder() -> Path:
    """``benchmarks/`` of the source tree this package runs from (an editable install)."""
    return Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module of the package ``resvision_benchmarks``."""
    folder = benchmarks_folder()
    if not (folder / f"{name}.py").is_file():
        raise FileNotFoundError(
            f"the benchmarks live in the source tree ({folder} does not hold {name}.py): run "
            "them from a clone of the repository installed with `pip install -e .`"
        )
    if PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PACKAGE, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        package = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{PACKAGE}.{name}")


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's options (--help)")


def _runner(name: str):
    def run(args: argparse.Namespace) -> int:
        return int(load(name).main(list(args.args)) or 0)

    return run


def _command(name: str, text: str) -> Command:
    return Command(text, _arguments, _runner(name), passthrough=True)


SEGMENTATION = _command(
    "segmentation", "train and inference images/s against segmentation-models-pytorch"
)
DETECTION = _command(
    "detection", "ours vs torchvision's Faster R-CNN, COCO evaluation, dataset size"
)
FACE = _command("face", "ArcFace training samples/s, the verification protocol's speed")
DEPTH = _command(
    "depth", "activation checkpointing: a training step's memory and time (ResNet-101)"
)
FACE_DETECTION = _command(
    "face_detection",
    "ours vs the PyTorch port's RetinaFace: images/s, identical detections, training step",
)
PREDICT = _command(
    "predict",
    "a collection of image files: the loop before the bulk path against it (workers), memory",
)
GALLERY = _command(
    "gallery",
    "face galleries: open time, search vs exact, add cost, clustering (100k-1M faces)",
)
