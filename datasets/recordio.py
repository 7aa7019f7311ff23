"""InsightFace's RecordIO (MXNet ``.rec`` + ``.idx``) read and written in pure Python.

Format (dmlc-core recordio): each record is ``uint32 magic 0xced7230a``, ``uint32 lrecord``
(upper 3 bits: continuation flag, lower 29: length), the payload, then zero padding to 4 bytes.
A payload that contains the magic number at a 4-byte boundary is split into parts (flags 1
first, 2 middle, 3 last) and joined back with the magic between parts. The ``.idx`` file has one
``index<TAB>offset`` line per record.

Payloads of InsightFace datasets are MXNet ``IRHeader`` packs: ``struct "IfQQ"`` (flag, label,
id, id2), then ``flag`` float32 labels if ``flag > 0``, then the encoded image. Record 0 holds
``flag > 0`` and ``label = (first image index + count, ...)``: the images are records
``1 .. label[0] - 1``.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_HEADER = struct.Struct("<IfQQ")
_LEN_MASK = (1 << 29) - 1


class RecordIOError(ValueError):
    """A corrupt or truncated ``.rec`` file (the message names the file and the offset)."""


class RecordReader:
    """Random access to the records of ``prefix.rec`` through ``prefix.idx`` (no whole-file
    load)."""

    def __init__(
        self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None
    ) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path else self.rec_path.with_suffix(".idx")
        if not self.rec_path.is_file():
            raise RecordIOError(f"record file {str(self.rec_path)!r} does not exist")
        if not self.idx_path.is_file():
            raise RecordIOError(
                f"index file {str(self.idx_path)!r} does not exist (it comes with the .rec)"
            )
        offsets = {}
        for n, line in enumerate(self.idx_path.read_text().splitlines()):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise RecordIOError(
                    f"{str(self.idx_path)!r} line {n + 1} is not 'index<TAB>offset': {line!r}"
                )
            offsets[int(parts[0])] = int(parts[1])
        self.offsets = offsets
        self.size = self.rec_path.stat().st_size
        self._file = None

    def __getstate__(self):  # DataLoader workers open their own handle
        state = self.__dict__.copy()
        state["_file"] = None
        return state

    def keys(self) -> list[int]:
        return sorted(self.offsets)

    def _handle(self):
        if self._file is None:
            self._file = open(self.rec_path, "rb")  # noqa: SIM115 (kept open for random access)
        return self._file

    def read(self, key: int) -> bytes:
        if key not in self.offsets:
            raise RecordIOError(f"{str(self.rec_path)!r} has no record {key} in its index")
        return self.read_at(self.offsets[key])

    def read_at(self, offset: int) -> bytes:
        f = self._handle()
        f.seek(offset)
        parts = []
        position = offset
        while True:
            head = f.read(8)
            if len(head) < 8:
                raise RecordIOError(
                    f"{str(self.rec_path)!r} is truncated: record at offset {position} has no "
                    f"header (file size {self.size})"
                )
            magic, lrecord = struct.unpack("<II", head)
            if magic != MAGIC:
                raise RecordIOError(
                    f"{str(self.rec_path)!r} is corrupt: bad magic 0x{magic:08x} at offset "
                    f"{position} (expected 0x{MAGIC:08x})"
                )
            length, cflag = lrecord & _LEN_MASK, lrecord >> 29
            data = f.read(length)
            if len(data) < length:
                raise RecordIOError(
                    f"{str(self.rec_path)!r} is truncated: record at offset {position} needs "
                    f"{length} bytes, {len(data)} remain"
                )
            f.read((-length) % 4)
            parts.append(data)
            position = f.tell()
            if cflag in (0, 3):
                break
            if cflag not in (1, 2):
                raise RecordIOError(
                    f"{str(self.rec_path)!r} is corrupt: continuation flag {cflag} at offset "
                    f"{position}"
                )
        return _MAGIC_BYTES.join(parts)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class RecordWriter:
    """Write ``prefix.rec`` and ``prefix.idx`` (atomically: temporary files renamed at close)."""

    def __init__(self, rec_path: str | os.PathLike) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = self.rec_path.with_suffix(".idx")
        self.rec_path.parent.mkdir(parents=True, exist_ok=True)
        self._rec_tmp = self.rec_path.with_name(self.rec_path.name + ".tmp")
        self._rec = open(self._rec_tmp, "wb")  # noqa: SIM115
        self._index: list[tuple[int, int]] = []

    def write(self, key: int, payload: bytes) -> None:
        self._index.append((key, self._rec.tell()))
        # split where the magic number sits on a 4-byte boundary (dmlc's rule)
        pieces, start = [], 0
        for pos in range(0, len(payload) - 3, 4):
            if payload[pos : pos + 4] == _MAGIC_BYTES:
                pieces.append(payload[start:pos])
                start = pos + 4
        pieces.append(payload[start:])
        for i, piece in enumerate(pieces):
            cflag = 0 if len(pieces) == 1 else (1 if i == 0 else (3 if i == len(pieces) - 1 else 2))
            self._rec.write(struct.pack("<II", MAGIC, (cflag << 29) | len(piece)))
            self._rec.write(piece)
            self._rec.write(b"\0" * ((-len(piece)) % 4))

    def close(self) -> None:
        self._rec.flush()
        os.fsync(self._rec.fileno())
        self._rec.close()
        idx_tmp = self.idx_path.with_name(self.idx_path.name + ".tmp")
        idx_tmp.write_text("".join(f"{k}\t{o}\n" for k, o in self._index))
        os.replace(self._rec_tmp, self.rec_path)
        os.replace(idx_tmp, self.idx_path)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self._rec.close()
            self._rec_tmp.unlink(missing_ok=True)


def pack(label: float | np.ndarray, payload: bytes, id_: int = 0) -> bytes:
    """An IRHeader pack: a float label (flag 0) or a float32 label array (flag = its length)."""
    if np.ndim(label) == 0:
        return _HEADER.pack(0, float(label), id_, 0) + payload
    arr = np.asarray(label, np.float32).reshape(-1)
    return _HEADER.pack(len(arr), 0.0, id_, 0) + arr.tobytes() + payload


def unpack(record: bytes) -> tuple[int, np.ndarray | float, bytes]:
    """``(flag, label, payload)`` of an IRHeader pack."""
    if len(record) < _HEADER.size:
        raise RecordIOError(
            f"record of {len(record)} bytes is shorter than its {_HEADER.size}-byte header"
        )
    flag, label, _, _ = _HEADER.unpack_from(record)
    rest = record[_HEADER.size :]
    if flag > 0:
        label = np.frombuffer(rest[: 4 * flag], np.float32).copy()
        rest = rest[4 * flag :]
    return flag, label, rest
