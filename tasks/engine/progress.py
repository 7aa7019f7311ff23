"""Progress of long loops, as training shows it: a bar with ETA on a terminal, otherwise a
line every few seconds (logs, CI). No torch import: the command line uses it too."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], *, total: int, desc: str, every: float = 10.0) -> Iterator[T]:
    """A progress bar with ETA on a terminal; otherwise a line every ``every`` seconds."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, total=total, desc=desc, dynamic_ncols=True, leave=False)
        return
    start = last = time.perf_counter()
    for i, item in enumerate(items, 1):
        yield item
        now = time.perf_counter()
        if now - last >= every and i < total:
            eta = (now - start) / i * (total - i)
            print(f"{desc}: {i}/{total}, eta {eta:.0f} s", file=sys.stderr, flush=True)
            last = now
