"""Files that survive faults: written to a temporary file, fsync'ed, then renamed.

``os.replace`` is atomic, so a crash or a kill at any moment leaves either the old complete file
or the new complete file at the path, never a truncated one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync unless not ``durable``, rename).

    Without ``durable`` the file is still whole or absent after a kill of the process (the
    page cache outlives it), though not necessarily after a power cut."""
    with atomic_open(path, durable=durable) as f:
        f.write(data)


def atomic_write_text(path: Path, text: str, *, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "wb", *, durable: bool = True) -> Iterator[IO]:
    """A file object for ``path`` that appears there complete or not at all: written to a
    temporary file beside it, then (``durable``: fsync'ed and) renamed when the ``with`` block
    ends without an error; on an error, or a kill, the old file (if any) stays as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        _fsync_dir(path.parent)
