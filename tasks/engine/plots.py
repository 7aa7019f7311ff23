"""PNG plots of a run: loss terms, learning rate and validation metrics over iterations."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .logger import read_metrics


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
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    loss_keys = sorted(k for k in series if k == "loss" or k.startswith("loss_"))
    figure(loss_keys, "loss", "training loss terms", log_y=True)
    figure(["lr"], "lr", "learning rate")
    figure(
        sorted(k for k in series if k.startswith(("val/", "val_ema/"))), "val", "validation metrics"
    )
    return written
