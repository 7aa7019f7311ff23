"""Aggregated output files written piece by piece, so that memory does not grow with the number
of inputs: a JSON list and an ``.npz`` of columns. Both appear at their path complete or not at
all (:func:`~.files.atomic_open`), and read back exactly as ``json.dumps(list)`` and
``np.savez(path, **columns)`` would have written them."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from .files import atomic_open


class JsonListWriter:
    """``json.dumps(items, indent=indent)``, written one item at a time to ``file`` (an open
    text file); ``level`` nests the list that deep (a list inside an object).

    >>> with atomic_open(path, "w") as f:  # doctest: +SKIP
    ...     out = JsonListWriter(f, indent=1)
    ...     for record in records:
    ...         out.write(record)
    ...     out.close()
    """

    def __init__(self, file: IO[str], *, indent: int | None = None, level: int = 0) -> None:
        self.file, self.indent, self.level = file, indent, level
        self.count = 0

    def write(self, item: Any) -> None:
        if self.indent is None:
            self.file.write(("[" if not self.count else ", ") + json.dumps(item))
        else:
            pad = " " * self.indent * (self.level + 1)
            text = pad + json.dumps(item, indent=self.indent).replace("\n", "\n" + pad)
            self.file.write(("[\n" if not self.count else ",\n") + text)
        self.count += 1

    def close(self) -> None:
        if not self.count:
            self.file.write("[]")
        elif self.indent is None:
            self.file.write("]")
        else:
            self.file.write("\n" + " " * self.indent * self.level + "]")


@contextlib.contextmanager
def json_list_file(path: str | os.PathLike, *, indent: int | None = None):
    """A :class:`JsonListWriter` whose file appears at ``path`` complete (or not at all)."""
    with atomic_open(Path(path), "w") as f:
        out = JsonListWriter(f, indent=indent)
        yield out
        out.close()


class NpzWriter:
    """``np.savez(path, **columns)`` for columns that arrive in chunks of rows.

    Numeric chunks go to a raw file per column and strings to a JSON-lines file (their width is
    only known at the end); :meth:`close` writes each column once into the archive, uncompressed
    as ``np.savez`` does. ``declare`` gives a column its dtype and row shape so that it is
    written (empty) even when no row arrives.

    >>> with NpzWriter("embeddings.npz") as out:  # doctest: +SKIP
    ...     for vectors, names in batches:
    ...         out.append(embeddings=vectors, names=names)
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.work = self.path.with_name(f".{self.path.name}.columns-{os.getpid()}")
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.columns: dict[str, dict[str, Any]] = {}
        self.whole: dict[str, np.ndarray] = {}  # arrays given whole (put)
        self.discarded = False

    def __enter__(self) -> NpzWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """The archive is written when the block ends normally (unless :meth:`discard` was
        called); nothing is, after an error."""
        if exc_type is None and not self.discarded:
            self.close()
        else:
            self.abort()

    def discard(self) -> None:
        """Write nothing at the end of the ``with`` block (e.g. no row came)."""
        self.discarded = True

    def declare(self, key: str, dtype: Any, row_shape: tuple[int, ...] = ()) -> None:
        dtype = np.dtype(dtype)
        text = dtype.kind in "US"
        self.columns.setdefault(
            key,
            {
                "dtype": None if text else dtype,
                "text": text,
                "row_shape": tuple(row_shape),
                "rows": 0,
                "width": 1,
                "file": open(self.work / f"{len(self.columns)}.col", "wb"),  # noqa: SIM115
            },
        )

    def put(self, key: str, value: Any) -> None:
        """An array given whole (a 0-d string, say), written as it is."""
        self.whole[key] = np.asarray(value)

    def append(self, **chunks: Any) -> None:
        for key, chunk in chunks.items():
            array = np.asarray(chunk)
            if key not in self.columns:
                self.declare(key, array.dtype, array.shape[1:])
            col = self.columns[key]
            if array.shape[1:] != col["row_shape"]:
                raise ValueError(
                    f"column {key!r}: rows of shape {array.shape[1:]} after {col['row_shape']}"
                )
            if col["text"]:
                values = [str(v) for v in array.reshape(-1)]
                col["width"] = max([col["width"], *(len(v) for v in values)])
                col["file"].write("".join(json.dumps(v) + "\n" for v in values).encode())
            else:
                if array.dtype != col["dtype"]:
                    array = array.astype(col["dtype"])
                col["file"].write(np.ascontiguousarray(array).tobytes())
            col["rows"] += len(array)

    def close(self) -> Path:
        """Write the archive (atomically) and remove the column files."""
        try:
            for col in self.columns.values():
                col["file"].close()
            with (
                atomic_open(self.path, "wb") as f,
                zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as archive,
            ):
                for key, col in self.columns.items():
                    with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                        self._write_column(member, col)
                for key, value in self.whole.items():
                    with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, value, allow_pickle=False)
        finally:
            self.abort()
        return self.path

    def abort(self) -> None:
        for col in self.columns.values():
            col["file"].close()
        shutil.rmtree(self.work, ignore_errors=True)

    @staticmethod
    def _write_column(member: IO[bytes], col: dict[str, Any]) -> None:
        dtype = np.dtype(f"<U{col['width']}") if col["text"] else col["dtype"]
        shape = (col["rows"], *col["row_shape"])
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False}
        header["shape"] = shape
        np.lib.format.write_array_header_1_0(member, header)
        with open(col["file"].name, "rb") as source:
            if not col["text"]:
                shutil.copyfileobj(source, member, 1 << 20)
                return
            lines = []
            for line in source:
                lines.append(json.loads(line))
                if len(lines) == 65536:
                    member.write(np.array(lines, dtype=dtype).tobytes())
                    lines = []
            if lines:
                member.write(np.array(lines, dtype=dtype).tobytes())
