"""InsightFace RecordIO without MXNet: round trips, corrupt and truncated files."""

from __future__ import annotations

import numpy as np
import pytest

from resvision.datasets.recordio import (
    MAGIC,
    RecordIOError,
    RecordReader,
    RecordWriter,
    pack,
    unpack,
)


def test_recordio_round_trip_with_the_magic_number_inside_a_payload(tmp_path):
    payloads = [
        b"abc",
        b"x" * 8 + MAGIC.to_bytes(4, "little") + b"tail",
        MAGIC.to_bytes(4, "little") * 3,
        b"",
    ]
    with RecordWriter(tmp_path / "t.rec") as w:
        for i, p in enumerate(payloads):
            w.write(i, pack(float(i), p))
    reader = RecordReader(tmp_path / "t.rec")
    for i, p in enumerate(payloads):
        flag, label, data = unpack(reader.read(i))
        assert (flag, label, data) == (0, float(i), p)
    flag, label, data = unpack(pack(np.array([3.0, 9.0]), b"img"))
    assert flag == 2 and label.tolist() == [3.0, 9.0] and data == b"img"


def test_corrupt_and_truncated_records_name_the_offset(tmp_path):
    with RecordWriter(tmp_path / "t.rec") as w:
        w.write(0, pack(0.0, b"a" * 100))
        w.write(1, pack(1.0, b"b" * 100))
    data = (tmp_path / "t.rec").read_bytes()
    (tmp_path / "cut.rec").write_bytes(data[:-30])
    (tmp_path / "cut.idx").write_text((tmp_path / "t.idx").read_text())
    reader = RecordReader(tmp_path / "cut.rec")
    reader.read(0)
    with pytest.raises(RecordIOError, match=r"truncated: record at offset 132"):
        reader.read(1)
    bad = bytearray(data)
    bad[132] ^= 0xFF
    (tmp_path / "bad.rec").write_bytes(bytes(bad))
    (tmp_path / "bad.idx").write_text((tmp_path / "t.idx").read_text())
    with pytest.raises(RecordIOError, match=r"bad magic .* at offset 132"):
        RecordReader(tmp_path / "bad.rec").read(1)
    with pytest.raises(RecordIOError, match=r"index file .*missing\.idx"):
        (tmp_path / "missing.rec").write_bytes(b"")
        RecordReader(tmp_path / "missing.rec")
