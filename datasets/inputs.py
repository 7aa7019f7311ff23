"""The images a command or a predictor is given: files, folders (searched recursively) and glob
patterns, expanded once, de-duplicated, each with a name relative to the argument it came from.

No torch, no OpenCV: the command line imports this while it builds its parser.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class InputImage:
    """An input file and its name relative to the argument that named it (``sub1/img.jpg``)."""

    path: Path
    name: str


def images_in(folder: Path) -> list[Path]:
    """The image files under ``folder`` (recursive), sorted."""
    return sorted(
        p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _glob_base(pattern: str) -> Path:
    """The fixed part of a glob pattern (``photos/2024/*.jpg`` -> ``photos/2024``)."""
    fixed = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def expand_inputs(items: Sequence[str | os.PathLike]) -> list[InputImage]:
    """The images ``items`` name, in order: files as given, folders searched recursively
    (sorted), glob patterns expanded (names relative to the pattern's fixed part). The same file
    named twice counts once; where two arguments give the same relative name, names become
    relative to the inputs' common folder so that every input keeps its own name."""
    found: list[InputImage] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found += [InputImage(p, p.relative_to(path).as_posix()) for p in images_in(path)]
        elif path.is_file():
            found.append(InputImage(path, path.name))
        elif glob.has_magic(str(item)):
            base = _glob_base(str(item))
            for m in sorted(glob.glob(str(item), recursive=True)):
                p = Path(m)
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                    found.append(InputImage(p, os.path.relpath(p, base).replace(os.sep, "/")))
        else:
            raise FileNotFoundError(
                f"input {str(item)!r} is neither an image file, a folder nor a glob pattern "
                "that matches files"
            )
    unique: dict[Path, InputImage] = {}
    for image in found:
        unique.setdefault(image.path.resolve(), image)
    images = list(unique.values())
    if not images:
        raise FileNotFoundError(f"no images found in {[str(i) for i in items]}")
    names = [i.name for i in images]
    if len(set(names)) != len(names):  # the same relative name from two arguments
        root = Path(os.path.commonpath([str(i.path.resolve()) for i in images]))
        if root.is_file():
            root = root.parent
        images = [InputImage(i.path, i.path.resolve().relative_to(root).as_posix()) for i in images]
    return images
