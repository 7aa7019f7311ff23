"""Prediction over collections: images decoded in worker processes, outputs streamed to disk as
append-only parts, ``--resume`` after a kill, and many processes (``torchrun``).

The inputs (``N`` images, in the order the command line expands them) are cut into *windows* of
``batch_size * window_batches`` consecutive images, and each window into batches: in input order,
or, for models that pad a batch to its largest image (detectors), sorted by aspect ratio within
the window so that a batch holds images of similar shape. A batch's composition therefore
depends only on the inputs, the batch size and the grouping (never on the number of workers or
processes), so its outputs are the same to the bit whichever process runs it, and a resumed run
computes exactly the batches an uninterrupted one would.

Windows are dealt out round-robin to the processes of a ``torchrun`` launch (rank ``r`` of ``R``
takes windows ``r, r + R, ...``) and, within a process, to its decoding workers, which read the
image headers, plan the window's batches, skip the batches already done, and decode (and, for
face crops, align) the images of the others.

Each finished batch becomes one record appended to its process's part log (``PARTS/*.log``):
its entries (one per input image: a JSON record, numpy arrays, or why the image was skipped)
with a checksum. A kill at any moment leaves every complete record readable and at most a torn
last record, which is ignored: ``--resume`` redoes only the batches that were in flight. When
every process is done, rank 0 reads the records back in input order, one window at a time (so
memory does not grow with ``N``), and the command assembles its usual files from them; then the
parts are removed. ``PARTS/manifest.json`` (written atomically before any work) records what the
outputs depend on (model file, options, inputs), so a resume with another model or option is
refused instead of mixing two runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import shutil
import struct
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from resvision.datasets.images import ImageReadError, read_rgb_tensor
from resvision.datasets.inputs import InputImage

from . import distributed as D
from .data import _seed_worker
from .files import atomic_write_text
from .runtime import StopSignal

log = logging.getLogger("resvision")

MANIFEST = "manifest.json"
RECORD_MAGIC = b"RVB1"
RECORD_HEAD = struct.Struct("<4sIQI")  # magic, header bytes, payload bytes, crc32 of both
FORMAT_VERSION = 1


def default_workers(local_world_size: int = 1) -> int:
    """Decoding workers per process: half this machine's cores shared among the processes on
    it (the other half runs the model), at least 1 and at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, (cores or 1) // 2 // max(1, local_world_size)))


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (what a resumed run checks the model against)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(height, width)`` as decoded (EXIF rotation applied) from the file's header only;
    None when the header cannot be read (the decoder names the problem later)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            w, h = img.size
            if img.format in ("JPEG", "MPO", "TIFF"):  # EXIF in the header (PNG: at the end)
                orientation = img.getexif().get(0x0112, 1)
                if orientation in (5, 6, 7, 8):
                    w, h = h, w
            return h, w
    except Exception:  # any unreadable header: the image is skipped when it is decoded
        return None


def plan_window(
    indices: Sequence[int],
    batch_size: int,
    sizes: Sequence[tuple[int, int] | None] | None = None,
) -> list[list[int]]:
    """The batches of one window of input indices: in order, or with ``sizes`` sorted by
    aspect ratio (width / height, stable; unreadable headers count as square) and then cut."""
    order = list(indices)
    if sizes is not None:
        ratios = [size[1] / size[0] if size and size[0] else 1.0 for size in sizes]
        order = [i for _, i in sorted(zip(ratios, order), key=lambda pair: pair[0])]
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


# -- what a batch carries ------------------------------------------------------------------------
@dataclass
class LoadedBatch:
    """One batch as the workers deliver it: ``(input index, loaded item or None, error or
    None)`` per image, in the batch's order."""

    window: int
    number: int  # the batch's place in its window's plan
    indices: list[int]
    items: list[Any]
    errors: list[str | None]
    problem: str | None = None  # set when the batch cannot be run (the main process raises it)

    def readable(self) -> list[tuple[int, Any]]:
        """``(input index, item)`` of the images that could be read."""
        return [(i, x) for i, x, e in zip(self.indices, self.items, self.errors) if e is None]

    def entries(self, kept: dict[int, Entry]) -> list[Entry]:
        """One entry per image, in the batch's order: ``kept[i]`` for the images read, a
        skipped entry (with the reason) for the others."""
        return [
            kept[i] if e is None else Entry(i, skipped=e) for i, e in zip(self.indices, self.errors)
        ]

    def pin_memory(self) -> LoadedBatch:
        self.items = [_pin(x) for x in self.items]
        return self


def _pin(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.pin_memory()
    if isinstance(x, dict):
        return {k: _pin(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(_pin(v) for v in x)
    return x


@dataclass
class Entry:
    """What a command keeps of one input image: a JSON-able ``record``, numpy ``arrays`` (the
    first axis counts rows, e.g. one per face), or ``skipped`` (why it could not be read)."""

    index: int
    record: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: str | None = None


def encode_entries(entries: Sequence[Entry]) -> bytes:
    """A batch's entries as ``.npz`` bytes: one JSON header, one array per key."""
    meta, arrays = [], {}
    for e in entries:
        rows = {}
        for key, value in e.arrays.items():
            arrays.setdefault(key, []).append(np.asarray(value))
            rows[key] = int(np.asarray(value).shape[0])
        meta.append({"index": e.index, "record": e.record, "skipped": e.skipped, "rows": rows})
    buf = io.BytesIO()
    payload = {f"a.{k}": np.concatenate(v) for k, v in arrays.items()}
    payload["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(buf, **payload)
    return buf.getvalue()


def decode_entries(data: bytes) -> list[Entry]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        meta = json.loads(npz["meta"].tobytes())
        arrays = {k[2:]: npz[k] for k in npz.files if k.startswith("a.")}
    offsets = dict.fromkeys(arrays, 0)
    out = []
    for m in meta:
        own = {}
        for key, n in m["rows"].items():
            own[key] = arrays[key][offsets[key] : offsets[key] + n]
            offsets[key] += n
        out.append(Entry(m["index"], m["record"], own, m["skipped"]))
    return out


# -- the append-only part logs ---------------------------------------------------------------------
@dataclass(frozen=True)
class RecordRef:
    path: Path
    offset: int  # where the header starts
    size: int  # header + payload bytes
    window: int
    number: int
    indices: tuple[int, ...]


def append_record(fd: int, header: dict, payload: bytes) -> None:
    """One record: magic, sizes, crc32, JSON header, payload; written in full with os.write."""
    head = json.dumps(header, separators=(",", ":")).encode()
    crc = zlib.crc32(payload, zlib.crc32(head))
    data = RECORD_HEAD.pack(RECORD_MAGIC, len(head), len(payload), crc) + head + payload
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def scan_log(path: Path) -> list[RecordRef]:
    """The complete records of a part log, in order. A torn tail (a kill while appending) ends
    the scan; a checksum is checked for the last record (the only one a kill can tear)."""
    refs: list[RecordRef] = []
    size = path.stat().st_size
    with open(path, "rb") as f:
        offset = 0
        while offset + RECORD_HEAD.size <= size:
            f.seek(offset)
            magic, hlen, plen, crc = RECORD_HEAD.unpack(f.read(RECORD_HEAD.size))
            end = offset + RECORD_HEAD.size + hlen + plen
            if magic != RECORD_MAGIC or end > size:
                break
            head = f.read(hlen)
            last = end == size or _peek_magic(f, end) != RECORD_MAGIC
            if last and zlib.crc32(f.read(plen), zlib.crc32(head)) != crc:  # a kill tears the last
                break
            try:
                h = json.loads(head)
            except ValueError:
                break
            refs.append(RecordRef(path, offset, end - offset, h["w"], h["k"], tuple(h["i"])))
            offset = end
    return refs


def _peek_magic(f, offset: int) -> bytes:
    here = f.tell()
    f.seek(offset)
    magic = f.read(len(RECORD_MAGIC))
    f.seek(here)
    return magic


def read_record(ref: RecordRef) -> list[Entry]:
    with open(ref.path, "rb") as f:
        f.seek(ref.offset)
        data = f.read(ref.size)
    _, hlen, _, crc = RECORD_HEAD.unpack_from(data)
    body = memoryview(data)[RECORD_HEAD.size :]
    if zlib.crc32(body[hlen:], zlib.crc32(body[:hlen])) != crc:
        raise ValueError(
            f"part {ref.path} is damaged at byte {ref.offset} (checksum): run the command again "
            "with --overwrite"
        )
    return decode_entries(bytes(body[hlen:]))


# -- workers -----------------------------------------------------------------------------------
Loader = Callable[[str, Any], Any]  # (path, extra) -> what the model needs; ImageReadError


class _Batches(IterableDataset):
    """This process's windows, planned and decoded by each worker in turn."""

    def __init__(self, plan: BatchPlan, windows: list[int], load: Loader, done: dict) -> None:
        self.plan = plan
        self.windows = windows
        self.load = load
        self.done = done  # (window, number) -> indices of the batches already done

    def __iter__(self) -> Iterator[LoadedBatch]:
        info = get_worker_info()
        windows = self.windows[info.id :: info.num_workers] if info else self.windows
        for w in windows:
            if self.plan.window_done(w, self.done):
                continue  # nothing to plan: no header is read again
            for k, indices in enumerate(self.plan.batches_of(w)):
                done = self.done.get((w, k))
                if done is not None:
                    if tuple(done) != tuple(indices):
                        problem = (
                            f"the inputs changed since the run started (batch {w}.{k} of the "
                            "parts held other images): start again with --overwrite"
                        )
                        yield LoadedBatch(w, k, list(indices), [], [], problem)
                        return
                    continue
                items, errors = [], []
                for i in indices:
                    try:
                        items.append(self.load(self.plan.paths[i], self.plan.extra(i)))
                        errors.append(None)
                    except ImageReadError as e:
                        items.append(None)
                        errors.append(str(e))
                yield LoadedBatch(w, k, list(indices), items, errors)


@dataclass
class BatchPlan:
    """How ``N`` inputs become batches (a pure function of the inputs and these settings)."""

    paths: list[str]
    batch_size: int
    group_by_aspect: bool = False
    window_batches: int = 16
    extras: np.ndarray | Sequence | None = None  # per input, given to the loader (landmarks)

    @property
    def window_size(self) -> int:
        return self.batch_size * self.window_batches

    @property
    def num_windows(self) -> int:
        return math.ceil(len(self.paths) / self.window_size)

    def window_indices(self, w: int) -> range:
        return range(w * self.window_size, min(len(self.paths), (w + 1) * self.window_size))

    def num_batches(self, w: int) -> int:
        return math.ceil(len(self.window_indices(w)) / self.batch_size)

    def window_done(self, w: int, done: dict) -> bool:
        """Whether every batch of window ``w`` is in ``done`` (its plan needs no header)."""
        return all((w, k) in done for k in range(self.num_batches(w)))

    def batches_of(self, w: int) -> list[list[int]]:
        indices = self.window_indices(w)
        sizes = [image_size(self.paths[i]) for i in indices] if self.group_by_aspect else None
        return plan_window(indices, self.batch_size, sizes)

    def extra(self, i: int) -> Any:
        return None if self.extras is None else self.extras[i]

    def settings(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "group_by_aspect": self.group_by_aspect,
            "window_batches": self.window_batches,
        }


def load_batches(
    plan: BatchPlan,
    load: Loader,
    *,
    workers: int = 0,
    windows: list[int] | None = None,
    done: dict | None = None,
    pin_memory: bool = False,
) -> Iterator[LoadedBatch]:
    """The batches of ``windows`` (default: all) not in ``done``, decoded by ``workers``
    processes (0: in this one), in a deterministic order."""
    windows = list(range(plan.num_windows)) if windows is None else windows
    dataset = _Batches(plan, windows, load, done or {})
    workers = min(workers, len(windows))
    if workers <= 0:
        yield from dataset
        return
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if pin_memory else 2,
        worker_init_fn=_seed_worker,
        persistent_workers=False,
    )
    yield from loader


def image_batches(
    images: Sequence[Any],
    batch_size: int,
    *,
    load: Loader,
    workers: int = 0,
    extras: Sequence | None = None,
) -> Iterator[list[Any]]:
    """Consecutive batches of ``load(image, extra)`` for a predictor's ``predict``: only a few
    batches are in memory at once, however many images are given. When every image is a file
    and there is more than one batch, ``workers`` processes read them, a few batches ahead, in
    order. An unreadable file raises :class:`ImageReadError`."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: give at least 1")
    extras = list(extras) if extras is not None else [None] * len(images)
    files = all(isinstance(x, str | os.PathLike) for x in images)
    if not files or workers <= 0 or len(images) <= batch_size:
        for start in range(0, len(images), batch_size):
            chunk = zip(images[start : start + batch_size], extras[start : start + batch_size])
            yield [load(x, e) for x, e in chunk]
        return
    plan = BatchPlan([str(x) for x in images], batch_size, window_batches=1, extras=extras)
    for batch in load_batches(plan, load, workers=workers):  # one batch per window: in order
        for error in batch.errors:
            if error is not None:
                raise ImageReadError(error)
        yield batch.items


# -- progress ----------------------------------------------------------------------------------
class BulkProgress:
    """Images/s, ETA and skips of every process, printed by rank 0: a bar on a terminal,
    otherwise a line every ``every`` seconds. Each rank writes its counts to a small file in
    the parts folder; rank 0 adds them up (no collective call, so ranks never wait for it)."""

    def __init__(self, parts: Path, rank: int, total: int, done_before: int, *, every=10.0):
        self.parts, self.rank, self.total = parts, rank, total
        self.done_before = done_before
        self.every = every
        self.done = self.skipped = 0
        self.start = self.last = self.last_file = time.perf_counter()
        self.bar = None
        if rank == 0 and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done_before, desc="images", dynamic_ncols=True)

    def update(self, done: int, skipped: int) -> None:
        self.done += done
        self.skipped += skipped
        now = time.perf_counter()
        if now - self.last_file >= 2.0:
            self._write()
            self.last_file = now
        if self.rank != 0:
            return
        done_all, skipped_all = self._totals()
        if self.bar is not None:
            self.bar.n = self.done_before + done_all + skipped_all
            self.bar.set_postfix(skipped=skipped_all, refresh=False)
            self.bar.refresh()
        elif now - self.last >= self.every:
            self.last = now
            print(self.line(done_all, skipped_all, now), file=sys.stderr, flush=True)

    def line(self, done: int, skipped: int, now: float) -> str:
        """``images: handled/total, rate, eta, skips`` (handled: done or skipped)."""
        handled = done + skipped
        rate = handled / max(now - self.start, 1e-9)
        left = self.total - self.done_before - handled
        eta = f", eta {left / rate:.0f} s" if rate > 0 else ""
        skips = f", {skipped} skipped" if skipped else ""
        return f"images: {self.done_before + handled}/{self.total}, {rate:.1f} images/s{eta}{skips}"

    def _write(self) -> None:
        state = {"done": self.done, "skipped": self.skipped}
        path = self.parts / f"progress-r{self.rank}.json"
        with contextlib.suppress(OSError):  # progress is a courtesy: never fail the run for it
            atomic_write_text(path, json.dumps(state), durable=False)

    def _totals(self) -> tuple[int, int]:
        done, skipped = self.done, self.skipped
        for p in self.parts.glob("progress-r*.json"):
            if p.name == f"progress-r{self.rank}.json":
                continue
            try:
                other = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            done, skipped = done + other.get("done", 0), skipped + other.get("skipped", 0)
        return done, skipped

    def close(self) -> None:
        self._write()
        if self.bar is not None:
            self.bar.close()


# -- the run -----------------------------------------------------------------------------------
class BulkJob:
    """What a command plugs into :func:`run_bulk`: how an image is loaded (in a worker), what
    the outputs depend on, what a batch produces (its per-image files written, one
    :class:`Entry` per input kept), and how the kept entries become the command's files."""

    group_by_aspect = False  # detectors pad a batch to its largest image: group by shape

    def __init__(self, depends_on: dict[str, Any]) -> None:
        self.depends_on = depends_on

    def loader(self) -> Loader:
        """A picklable ``(path, extra) -> item`` run in the workers (default: RGB tensor)."""
        return read_rgb_tensor

    def fingerprint(self) -> dict[str, Any]:
        return self.depends_on

    def process(self, batch: LoadedBatch, inputs: Sequence[InputImage]) -> list[Entry]:
        raise NotImplementedError

    def assemble(self, entries: Iterator[tuple[InputImage, Entry]]) -> dict[str, Any]:
        """Write the aggregated outputs from every entry (input order); returns what the
        command reports."""
        for _ in entries:
            pass
        return {}


class BulkStopped(Exception):
    """SIGTERM or SIGINT stopped the run after its last finished batch."""

    def __init__(self, signal_name: str, done: int) -> None:
        super().__init__(f"stopped by {signal_name}")
        self.signal_name, self.done = signal_name, done


@dataclass
class BulkSummary:
    """What one process did in this session."""

    done_before: int  # inputs (all ranks) whose outputs a resumed run found complete
    processed: int  # inputs this process ran now (skipped ones included)
    seconds: float


class BulkRun:
    """One bulk prediction: plan, resume check, sharded work, then (rank 0) the entries in
    input order.

    >>> run = BulkRun(inputs, Path("out/.parts"), job, batch_size=4, workers=2)  # doctest: +SKIP
    >>> summary = run.run()                      # every process
    >>> for entry in run.entries(): ...          # rank 0: assemble the outputs
    >>> run.remove_parts()
    """

    def __init__(
        self,
        inputs: Sequence[InputImage],
        parts: Path,
        job: BulkJob,
        *,
        batch_size: int,
        workers: int | None = None,
        resume: bool = False,
        overwrite: bool = False,
        strict: bool = False,
        extras: np.ndarray | Sequence | None = None,
        device: torch.device | None = None,
        window_batches: int = 16,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"--batch-size {batch_size}: give at least 1")
        self.inputs = list(inputs)
        self.parts = Path(parts)
        self.job = job
        self.dist = D.current()
        self.workers = default_workers(_local_world()) if workers is None else workers
        if self.workers < 0:
            raise ValueError(f"--workers {workers}: give 0 (decode in this process) or more")
        self.resume, self.overwrite, self.strict = resume, overwrite, strict
        self.device = device or torch.device("cpu")
        self.plan = BatchPlan(
            [str(i.path) for i in self.inputs],
            batch_size,
            group_by_aspect=job.group_by_aspect,
            window_batches=window_batches,
            extras=extras,
        )
        self.manifest = {
            "format": FORMAT_VERSION,
            "outputs_depend_on": job.fingerprint(),
            "plan": self.plan.settings(),
            "inputs": {"count": len(self.inputs), "sha256": _names_digest(self.inputs)},
        }
        self.done: dict[tuple[int, int], tuple[int, ...]] = {}
        self.done_before = 0

    # -- set-up: the resume rules -----------------------------------------------------------
    def existing_parts(self) -> bool:
        return (self.parts / MANIFEST).is_file()

    def prepare(self) -> None:
        """Check (rank 0) and create the parts folder; every rank then reads what is done."""
        problem = None
        if self.dist.is_main:
            try:
                self._prepare_main()
            except (ValueError, FileExistsError, OSError) as e:
                problem = (type(e).__name__, str(e))
        problem = D.broadcast_object(problem)
        if problem is not None:
            kind, message = problem
            raise (FileExistsError if kind == "FileExistsError" else ValueError)(message)
        D.barrier()
        refs = self.records()
        self.done = {(r.window, r.number): r.indices for r in refs}
        self.done_before = sum(len(r.indices) for r in refs)

    def _prepare_main(self) -> None:
        if self.parts.exists() and not self.existing_parts():
            shutil.rmtree(self.parts)  # created but never started: nothing of value
        if self.existing_parts():
            if self.overwrite:
                shutil.rmtree(self.parts)
            elif not self.resume:
                raise FileExistsError(unfinished_run(self.parts, len(self.inputs)))
            else:
                self._check_manifest()
                return
        self.parts.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.parts / MANIFEST, json.dumps(self.manifest, indent=1))

    def _check_manifest(self) -> None:
        try:
            saved = json.loads((self.parts / MANIFEST).read_text())
        except ValueError:
            raise ValueError(
                f"{self.parts / MANIFEST} is damaged: start again with --overwrite"
            ) from None
        changed = _differences(saved, self.manifest)
        if changed:
            raise ValueError(
                f"cannot resume the run in {self.parts.parent}: {'; '.join(changed[:3])} "
                "changed since it started. Resume with the same model and options, or pass "
                "--overwrite to start again"
            )

    def records(self) -> list[RecordRef]:
        """Every complete record of every part log (all ranks, all sessions)."""
        return [r for p in sorted(self.parts.glob("*.log")) for r in scan_log(p)]

    # -- the work -----------------------------------------------------------------------------
    def my_windows(self) -> list[int]:
        return list(range(self.dist.rank, self.plan.num_windows, self.dist.world_size))

    def run(self) -> BulkSummary:
        """Process this rank's batches that are not done yet; then wait for the others."""
        t0 = time.perf_counter()
        self.prepare()
        session = f"{int(time.time() * 1000):x}-{os.getpid()}"
        log_path = self.parts / f"r{self.dist.rank:05d}-{session}.log"
        progress = BulkProgress(self.parts, self.dist.rank, len(self.inputs), self.done_before)
        stop = StopSignal("finishing this batch, then stopping")
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        last_sync = time.perf_counter()
        try:
            with stop:
                batches = load_batches(
                    self.plan,
                    self.job.loader(),
                    workers=self.workers,
                    windows=self.my_windows(),
                    done=self.done,
                    pin_memory=self.device.type == "cuda",
                )
                for batch in batches:
                    if batch.problem:
                        raise ValueError(batch.problem)
                    for i, error in zip(batch.indices, batch.errors):
                        if error is not None:
                            if self.strict:
                                raise ImageReadError(error)
                            log.warning("skipped %s: %s", self.inputs[i].name, error)
                    entries = self.job.process(batch, self.inputs)
                    header = {"w": batch.window, "k": batch.number, "i": batch.indices}
                    append_record(fd, header, encode_entries(entries))
                    if time.perf_counter() - last_sync > 10.0:
                        os.fsync(fd)
                        last_sync = time.perf_counter()
                    skipped = sum(e is not None for e in batch.errors)
                    progress.update(len(batch.indices) - skipped, skipped)
                    if stop.received:
                        handled = progress.done + progress.skipped
                        raise BulkStopped(stop.received, self.done_before + handled)
        finally:
            os.fsync(fd)
            os.close(fd)
            progress.close()
        D.barrier()
        processed = progress.done + progress.skipped
        return BulkSummary(self.done_before, processed, time.perf_counter() - t0)

    # -- assembly (rank 0) ----------------------------------------------------------------------
    def entries(self) -> Iterator[tuple[InputImage, Entry]]:
        """Every input's entry in input order, read back one window at a time."""
        by_window: dict[int, list[RecordRef]] = {}
        for ref in self.records():
            by_window.setdefault(ref.window, []).append(ref)
        missing = []
        for w in range(self.plan.num_windows):
            refs = {r.number: r for r in by_window.get(w, [])}
            if len(refs) < self.plan.num_batches(w):
                missing.append(w)
                continue
            entries = [e for k in sorted(refs) for e in read_record(refs[k])]
            entries.sort(key=lambda e: e.index)
            for e in entries:
                yield self.inputs[e.index], e
        if missing:
            raise ValueError(
                f"{len(missing)} windows of images have no outputs in {self.parts} (several "
                "machines must write --out to storage they all see): run again with --resume"
            )

    def remove_parts(self) -> None:
        shutil.rmtree(self.parts, ignore_errors=True)


def unfinished_run(parts: Path, total: int) -> str | None:
    """The hint for a command that finds an unfinished run of itself in ``parts`` (None when
    there is none)."""
    parts = Path(parts)
    if not (parts / MANIFEST).is_file():
        return None
    done = sum(len(r.indices) for p in sorted(parts.glob("*.log")) for r in scan_log(p))
    return (
        f"an unfinished run of this command is in {parts} ({done} of {total} images done): "
        "continue it with --resume, or pass --overwrite to start again"
    )


def _local_world() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def _names_digest(inputs: Sequence[InputImage]) -> str:
    h = hashlib.sha256()
    for i in inputs:
        h.update(i.name.encode())
        h.update(b"\0")
    return h.hexdigest()


def _differences(saved: dict, now: dict, prefix: str = "") -> list[str]:
    """What differs between two manifests, as readable phrases."""
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{name}.")
        elif a != b:
            out.append(f"{name} ({_short(a)} -> {_short(b)})")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:18] + "..." + text[-18:]


def init_bulk_distributed(device: str) -> D.DistInfo:
    """Join a torchrun launch for bulk prediction: like training's, but the barrier at the end
    may wait long for the slowest rank (hours on a collection), so the timeout is a day."""
    return D.init_distributed(device, timeout=timedelta(days=1))


@dataclass
class BulkResult:
    """What a bulk prediction did, over every process (``report`` is the job's own)."""

    images: int  # inputs with outputs
    skipped: list[str]  # the inputs that could not be read
    done_before: int  # inputs a resumed run found done
    processed: int  # inputs this process ran in this session
    seconds: float
    report: dict[str, Any]


def run_bulk(
    job: BulkJob,
    inputs: Sequence[InputImage],
    parts: Path,
    **options: Any,
) -> BulkResult | None:
    """Run ``job`` over ``inputs`` (:class:`BulkRun`'s ``options``), then on rank 0 assemble the
    outputs and remove the parts; other ranks return None once their share is done."""
    t0 = time.perf_counter()
    run = BulkRun(inputs, parts, job, **options)
    summary = run.run()
    if not run.dist.is_main:
        return None
    images, skipped = 0, []

    def counted() -> Iterator[tuple[InputImage, Entry]]:
        nonlocal images
        for item, entry in run.entries():
            if entry.skipped is not None:
                skipped.append(item.name)
                continue
            images += 1
            yield item, entry

    entries = counted()
    report = job.assemble(entries)
    for _ in entries:  # every entry counted, even where a job stops early
        pass
    run.remove_parts()
    seconds = time.perf_counter() - t0
    return BulkResult(images, skipped, summary.done_before, summary.processed, seconds, report)
