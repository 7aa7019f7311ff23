"""The bulk-prediction path (issue 19): batches that depend on the inputs alone, decoding
workers that change nothing, append-only parts that survive kills, ``--resume`` that redoes only
the batches in flight, and ranks of a torchrun launch that share the work without overlap."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resvision.datasets.inputs import expand_inputs
from resvision.tasks.engine.bulk import (
    BatchPlan,
    Entry,
    append_record,
    decode_entries,
    encode_entries,
    plan_window,
    read_record,
    run_bulk,
    scan_log,
)

from .bulk_toy import MeanColour

SCRIPT = Path(__file__).with_name("bulk_toy.py")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _images(folder: Path, n: int = 30, seed: int = 0) -> Path:
    """``n`` small PNGs of random sizes and aspect ratios in two sub-folders, and one file
    that is not an image (skipped, and named, by every run)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = rng.integers(6, 30, 2)
        path = folder / f"{'ab'[i % 2]}/img{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    (folder / "a" / "broken.png").write_bytes(b"not a png")
    return folder


def _in_process(images: Path, out: Path, **options) -> dict:
    job = MeanColour(out, option=options.pop("option", 0))
    result = run_bulk(
        job,
        expand_inputs([images]),
        out / ".parts",
        batch_size=options.pop("batch_size", 2),
        window_batches=2,
        **options,
    )
    return {"result": result, "job": job}


def _outputs(out: Path) -> dict[str, bytes]:
    """Every file a run left (parts excluded: they are gone after a finished run)."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def _records(parts: Path) -> list:
    return [r for log in sorted(parts.glob("*.log")) for r in scan_log(log)]


# -- 1. batches depend on the inputs alone; workers change nothing ------------------------------
def test_batches_are_planned_from_the_inputs_alone():
    sizes = [(10, 30), (30, 10), (20, 20), None, (10, 31), (30, 11)]
    # sorted by width / height within the window (an unreadable header counts as square)
    assert plan_window(range(6), 2, sizes) == [[1, 5], [2, 3], [0, 4]]
    assert plan_window(range(6), 4) == [[0, 1, 2, 3], [4, 5]]
    plan = BatchPlan([f"x{i}.png" for i in range(11)], 2, window_batches=2)
    assert plan.num_windows == 3 and list(plan.window_indices(2)) == [8, 9, 10]
    assert [plan.num_batches(w) for w in range(3)] == [2, 2, 2]
    assert plan.window_done(0, {(0, 0): (0, 1), (0, 1): (2, 3)})
    assert not plan.window_done(1, {(1, 0): (4, 5)})


def test_workers_give_the_same_outputs_in_input_order(tmp_path):
    images = _images(tmp_path / "images")
    runs = {w: _in_process(images, tmp_path / f"w{w}", workers=w) for w in (0, 2)}
    a, b = _outputs(tmp_path / "w0"), _outputs(tmp_path / "w2")
    assert a == b  # every byte: per-image files, records (with each image's batch) and arrays
    records = json.loads(a["records.json"])
    names = [i.name for i in expand_inputs([images]) if i.name != "a/broken.png"]
    assert [r["name"] for r in records] == names  # input order, not the order batches ran in
    # batches hold images of similar aspect ratio (sorted within each window of 4 images)
    by_batch = {}
    for r in records:
        by_batch.setdefault(tuple(r["batch"]), []).append(r["shape"][1] / r["shape"][0])
    windows = {}
    for (w, _), ratios in sorted(by_batch.items()):
        windows.setdefault(w, []).append(ratios)
    for batches in windows.values():
        flat = [r for ratios in batches for r in ratios]
        assert max(batches[0]) <= min(flat[len(batches[0]) :], default=np.inf)
    # the means are the images' own, and the unreadable file is named once
    with np.load(tmp_path / "w2" / "means.npz") as npz:
        assert list(npz["names"]) == names
        first = np.asarray(Image.open(images / names[0]), np.float64).mean((0, 1))
        assert np.array_equal(npz["mean"][0], first)
    assert runs[2]["result"].skipped == ["a/broken.png"] and runs[2]["result"].images == 30


# -- 2. append-only parts ----------------------------------------------------------------------
def test_a_torn_or_damaged_last_record_is_not_counted(tmp_path):
    log = tmp_path / "r0.log"
    entries = [Entry(3, {"a": 1}, {"x": np.arange(4.0)[None]}), Entry(4, skipped="unreadable")]
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    append_record(fd, {"w": 0, "k": 0, "i": [3, 4]}, encode_entries(entries))
    append_record(fd, {"w": 0, "k": 1, "i": [5]}, encode_entries([Entry(5, {"b": 2})]))
    os.close(fd)
    refs = scan_log(log)
    assert [(r.window, r.number, r.indices) for r in refs] == [(0, 0, (3, 4)), (0, 1, (5,))]
    back = read_record(refs[0])
    assert back[0].record == {"a": 1} and np.array_equal(back[0].arrays["x"], [np.arange(4.0)])
    assert back[1].skipped == "unreadable" and back[1].arrays == {}
    whole = log.read_bytes()
    log.write_bytes(whole[:-7])  # a kill while appending the second record
    assert len(scan_log(log)) == 1
    damaged = bytearray(whole)
    damaged[-3] ^= 0xFF  # a power cut that left the right length with wrong bytes
    log.write_bytes(bytes(damaged))
    assert len(scan_log(log)) == 1
    assert decode_entries(encode_entries([])) == []


# -- 3. resume ---------------------------------------------------------------------------------
def test_an_unfinished_run_needs_resume_and_the_same_options(tmp_path):
    images = _images(tmp_path / "images")
    reference = _outputs(_in_process(images, tmp_path / "ref")["job"].out)
    out = tmp_path / "out"
    crashing = MeanColour(out, crash_after=3)
    with pytest.raises(RuntimeError, match="crash"):
        run_bulk(crashing, expand_inputs([images]), out / ".parts", batch_size=2, window_batches=2)
    assert len(_records(out / ".parts")) == 3
    with pytest.raises(FileExistsError, match=r"6 of 31 images done.*--resume.*--overwrite"):
        _in_process(images, out)
    with pytest.raises(ValueError, match=r"option \(0 -> 1\).*--overwrite"):
        _in_process(images, out, resume=True, option=1)
    with pytest.raises(ValueError, match=r"batch_size \(2 -> 3\)"):
        _in_process(images, out, resume=True, batch_size=3)
    run = _in_process(images, out, resume=True)
    assert run["result"].done_before == 6 and run["job"].batches == 16 - 3
    assert _outputs(out) == reference


def _start(*args: str, torchrun: int = 0) -> subprocess.Popen:
    cmd = [sys.executable, str(SCRIPT), *args]
    if torchrun:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd = [*launcher, f"--nproc-per-node={torchrun}", str(SCRIPT), *args]
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def _kill_after(proc: subprocess.Popen, parts: Path, records: int, sig=signal.SIGKILL) -> int:
    """Send ``sig`` once the parts hold at least ``records`` complete records; their count."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if parts.is_dir() and len(_records(parts)) >= records:
            break
        time.sleep(0.005)
    assert proc.poll() is None, f"the run ended before it could be stopped: {proc.stderr.read()}"
    for pid in [proc.pid, *_descendants(proc.pid)]:  # torchrun's workers run in their own groups
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    proc.communicate(timeout=120)
    return len(_records(parts))


def _descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (from /proc), children first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], list(children.get(pid, []))
    while queue:
        child = queue.pop(0)
        found.append(child)
        queue += children.get(child, [])
    return found


def _finish(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=ENV, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_kills_at_random_points_then_resume_gives_an_uninterrupted_runs_outputs(tmp_path):
    images = _images(tmp_path / "images", n=40)
    reference = _outputs(_in_process(images, tmp_path / "ref")["job"].out)
    out = tmp_path / "out"
    common = [str(images), "--out", str(out), "--sleep", "0.04"]
    rng = random.Random()
    first = rng.randint(1, 8)
    killed_at = _kill_after(_start(*common, "--workers", "2"), out / ".parts", first)
    assert killed_at >= first
    second = rng.randint(killed_at + 1, killed_at + 6)
    killed_at = _kill_after(_start(*common, "--resume"), out / ".parts", second)
    done = sum(len(r.indices) for r in _records(out / ".parts"))
    summary = _finish(*common, "--resume", "--workers", "1")
    # only the batches without a complete record ran again: 41 inputs in 21 batches
    assert summary["done_before"] == done and summary["batches"] == 21 - killed_at
    assert summary["images"] == 40 and summary["skipped"] == ["a/broken.png"]
    assert _outputs(out) == reference  # and the parts are gone


def test_sigterm_stops_after_the_batch_in_hand(tmp_path):
    images = _images(tmp_path / "images", n=40)
    reference = _outputs(_in_process(images, tmp_path / "ref")["job"].out)
    out = tmp_path / "out"
    common = [str(images), "--out", str(out), "--sleep", "0.04"]
    parts = out / ".parts"
    proc = _start(*common)
    deadline = time.time() + 120
    while time.time() < deadline and not (parts.is_dir() and len(_records(parts)) >= 2):
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr and "finishing this batch" in stderr
    stopped = json.loads(stdout.strip().splitlines()[-1])
    records = _records(parts)
    # every batch it started was finished and kept: nothing torn at the end of its log
    assert sum(log.stat().st_size for log in parts.glob("*.log")) == sum(r.size for r in records)
    assert stopped["done"] == sum(len(r.indices) for r in records)
    _finish(*common, "--resume")
    assert _outputs(out) == reference


# -- 4. many processes -------------------------------------------------------------------------
def test_two_ranks_share_the_work_and_write_what_one_process_writes(tmp_path):
    images = _images(tmp_path / "images", n=40)
    reference = _outputs(_in_process(images, tmp_path / "ref")["job"].out)
    out = tmp_path / "two"
    proc = _start(str(images), "--out", str(out), torchrun=2)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    ranks = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    assert all(r["batches"] > 0 for r in ranks)  # both ranks worked...
    assert sum(r["batches"] for r in ranks) == 21  # ...on different batches
    assert _outputs(out) == reference
    # a killed two-rank run keeps both ranks' parts; one process finishes it
    out = tmp_path / "killed"
    common = [str(images), "--out", str(out), "--sleep", "0.04"]
    _kill_after(_start(*common, torchrun=2), out / ".parts", random.randint(2, 10))
    assert {log.name[:6] for log in (out / ".parts").glob("*.log")} == {"r00000", "r00001"}
    _finish(*common, "--resume")
    assert _outputs(out) == reference


def test_rank_0_reports_the_progress_of_every_rank(tmp_path, capsys):
    from resvision.tasks.engine.bulk import BulkProgress

    zero = BulkProgress(tmp_path, 0, total=100, done_before=10, every=0.0)
    one = BulkProgress(tmp_path, 1, total=100, done_before=10, every=0.0)
    one.update(30, 2)
    one.close()  # a rank writes its counts every few seconds, and when it stops
    zero.update(20, 0)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("images: 62/100, ") and "images/s, eta" in line
    assert line.endswith("2 skipped")
