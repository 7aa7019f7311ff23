"""PNG plots of a run: loss terms, learning rate and validation metrics over iterations."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .files import atomic_open
from .logger import read_metrics


def save_figure(fig, path: str | Path, *, dpi: int = 100) -> Path:
    """Write a matplotlib figure to ``path`` (the format of its suffix) whole or not at all
    (:func:`~.files.atomic_open`: a kill never leaves half a file), then close the figure."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_open(path) as f:
        fig.savefig(f, format=path.suffix.lstrip(".") or None, dpi=dpi)
    plt.close(fig)
    return path


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write ``RUN/plots/{loss,lr,val}.png`` from ``RUN/metrics.jsonl``; return the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for rec in records:
        it = rec.get("iteration")
        for key, value in rec.items():
            if (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and key not in ("iteration", "epoch")
            ):
                if key.startswith(("val/", "val_ema/")) and value < 0:
                    continue  # COCO's -1: no such objects in the data, not a score
                series[key].append((it, float(value)))
    out_dir = run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    def figure(keys: list[str], name: str, title: str, log_y: bool = False) -> None:
        keys = [k for k in keys if series.get(k)]
        if not keys:
            return
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for key in keys:
            xs, ys = zip(*series[key])
            ax.plot(xs, ys, label=key, marker="o" if len(xs) < 30 else None, markersize=3)
        ax.set_xlabel("iteration")
        ax.set_title(title)
        if log_y and all(y > 0 for k in keys for _, y in series[k]):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(save_figure(fig, out_dir / f"{name}.png"))

    loss_keys = sorted(k for k in series if k == "loss" or k.startswith("loss_"))
    figure(loss_keys, "loss", "training loss terms", log_y=True)
    figure(["lr"], "lr", "learning rate")
    figure(
        sorted(k for k in series if k.startswith(("val/", "val_ema/"))), "val", "validation metrics"
    )
    return written
