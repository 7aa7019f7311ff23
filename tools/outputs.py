"""What every command that writes files shares, so that none of them loses a user's file.

- The inputs a command names (files, folders, glob patterns) become
  :class:`~resvision.datasets.inputs.InputImage` items (``expand_inputs``), each with a name
  relative to the argument it came from (``sub1/img.jpg``), so that every input gets its own
  output: outputs keep the relative path, and the extension when two inputs share a stem
  (``img.jpg`` and ``img.png``).
- :func:`check_outputs` refuses, before any work is done, an output folder that is (or is
  inside) an input folder, an output that would replace an input, existing outputs unless
  ``--overwrite`` is given, and a folder that cannot be written.
- :class:`BatchReport` skips an unreadable item with a warning that names it, counts the skips
  and decides the exit status (non-zero only when nothing could be read, or with ``--strict``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from resvision.datasets.inputs import InputImage
from resvision.tasks.engine.progress import progress as progress

log = logging.getLogger("resvision")
T = TypeVar("T")


def plural(count: int, word: str, words: str | None = None) -> str:
    """``1 image``, ``2 images`` (``words`` for irregular plurals)."""
    return f"{count} {word if count == 1 else (words or word + 's')}"


def input_folders(items: Sequence[str | os.PathLike]) -> list[Path]:
    """The folders among ``items``: no output may be written into them."""
    return [Path(item) for item in items if Path(item).is_dir()]


def output_stems(images: Sequence[InputImage]) -> dict[Path, str]:
    """Each input's output name without extension: its relative name without the suffix, or
    with it where two inputs would otherwise share one (``img.jpg`` and ``img.png``)."""
    stems = [str(Path(i.name).with_suffix("")) for i in images]
    taken: dict[str, int] = {}
    for s in stems:
        taken[s] = taken.get(s, 0) + 1
    return {i.path: (s if taken[s] == 1 else i.name) for i, s in zip(images, stems)}


def ensure_writable(folder: Path) -> None:
    """Create ``folder`` if needed and check that files can be written in it; a clear error
    naming the path otherwise (before any work is done)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except FileExistsError:
        raise NotADirectoryError(f"output {str(folder)!r} is a file, not a folder") from None
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise PermissionError(
            f"cannot write to {str(folder)!r} ({reason.lower()}): choose another --out"
        ) from None


def check_outputs(
    outputs: Iterable[Path],
    *,
    inputs: Sequence[Path] = (),
    input_folders: Sequence[Path] = (),
    overwrite: bool = False,
    flag: str = "--overwrite",
) -> None:
    """Refuse, before any work, outputs that would replace an input or lie in an input folder,
    and existing outputs unless ``overwrite``; check the folders can be written."""
    outputs = [Path(o) for o in outputs]
    resolved_inputs = {Path(p).resolve() for p in inputs}
    for folder in {f.resolve() for f in input_folders}:
        for out in outputs:
            if out.resolve().is_relative_to(folder):
                raise ValueError(
                    f"outputs would be written into the input folder {str(folder)!r}: choose an "
                    "output folder outside it (--out)"
                )
    clashes = [o for o in outputs if o.resolve() in resolved_inputs]
    if clashes:
        raise ValueError(
            f"output {str(clashes[0])!r} is one of the inputs: choose another --out "
            "(an output never replaces an input)"
        )
    existing = [o for o in outputs if o.exists()]
    if existing and not overwrite:
        shown = ", ".join(str(o) for o in existing[:3])
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise FileExistsError(
            f"{plural(len(existing), 'output')} already exist ({shown}{more}): pass {flag} to "
            "replace them, or choose another --out"
        )
    for folder in sorted({o.parent for o in outputs}):
        ensure_writable(folder)


@dataclass
class BatchReport:
    """Skipped items of a batch command: each named once in a warning, then counted."""

    strict: bool = False
    done: int = 0
    skipped: list[str] = field(default_factory=list)

    def skip(self, name: str, error: Exception) -> None:
        if self.strict:
            raise error
        self.skipped.append(name)
        log.warning("skipped %s: %s", name, error)

    def summary(self) -> str:
        text = plural(self.done, "image")
        if self.skipped:
            text += f", {plural(len(self.skipped), 'unreadable input')} skipped"
        return text

    def exit_code(self) -> int:
        """0 when something was written; 1 when every input was unreadable."""
        return 0 if self.done or not self.skipped else 1
