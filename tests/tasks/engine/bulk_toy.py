"""A bulk job without a model, for the engine's tests: each image's mean colour (float64, as a
kept array) and a text file per image, plus the batch that held it. Imported by the tests, or run
as a script (a subprocess to kill, or under torchrun):

    python bulk_toy.py IMAGES --out OUT [--workers N] [--resume] [--sleep S] [--option K]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from resvision.datasets.inputs import InputImage, expand_inputs
from resvision.tasks.engine.bulk import (
    BulkJob,
    BulkStopped,
    Entry,
    LoadedBatch,
    init_bulk_distributed,
    run_bulk,
)
from resvision.tasks.engine.files import atomic_write_text
from resvision.tasks.engine.streams import NpzWriter, json_list_file


class MeanColour(BulkJob):
    group_by_aspect = True

    def __init__(self, out: Path, *, sleep: float = 0.0, option: int = 0, crash_after: int = 0):
        super().__init__({"job": "mean-colour", "option": option})
        self.out, self.sleep, self.crash_after = Path(out), sleep, crash_after
        self.batches = 0

    def process(self, batch: LoadedBatch, inputs: Sequence[InputImage]) -> list[Entry]:
        self.batches += 1
        if self.crash_after and self.batches > self.crash_after:
            raise RuntimeError("a crash in the middle of the run")
        time.sleep(self.sleep)
        kept = {}
        for i, rgb in batch.readable():
            mean = rgb.double().mean((0, 1)).numpy()
            atomic_write_text(self.out / f"{inputs[i].name}.txt", " ".join(map(repr, mean)))
            record = {"batch": [batch.window, batch.number], "shape": list(rgb.shape)}
            kept[i] = Entry(i, record, {"mean": mean[None]})
        return batch.entries(kept)

    def assemble(self, entries: Iterator[tuple[InputImage, Entry]]) -> dict[str, Any]:
        with (
            NpzWriter(self.out / "means.npz") as writer,
            json_list_file(self.out / "records.json", indent=1) as records,
        ):
            for item, entry in entries:
                records.write({"name": item.name, **entry.record})
                writer.append(mean=entry.arrays["mean"], names=[item.name])
        return {}


def run(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("inputs", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--option", type=int, default=0)
    args = p.parse_args(argv)
    dist = init_bulk_distributed("cpu")
    out = Path(args.out)
    job = MeanColour(out, sleep=args.sleep, option=args.option)
    try:
        result = run_bulk(
            job,
            expand_inputs(args.inputs),
            out / ".parts",
            batch_size=args.batch_size,
            workers=args.workers,
            resume=args.resume,
            window_batches=2,
        )
    except BulkStopped as e:
        print(json.dumps({"stopped": e.signal_name, "done": e.done}), flush=True)
        return 143
    summary = {"rank": dist.rank, "batches": job.batches}
    if result is not None:
        summary |= {"done_before": result.done_before, "processed": result.processed}
        summary |= {"images": result.images, "skipped": result.skipped}
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run())
