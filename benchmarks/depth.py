"""Activation checkpointing: peak activation memory and step time of a training step.

    resvision benchmark depth                       # the sizes of the issue (a GPU's job)
    resvision benchmark depth --cpu-sizes           # what the 2-core CPU box can run
    resvision benchmark depth --cases deeplab --deeplab-batch 2 --deeplab-size 256

For each model (DeepLabV3+ and Faster R-CNN on ResNet-101) and each setting (without and with
``activation_checkpointing=True``), one fresh process builds the model, runs one warm-up
training step (so that gradients and optimizer state exist), then ``--steps`` timed steps
(forward, backward, SGD step). The memory figure is the step's own: the peak during a step minus
what was allocated before it (weights, gradients, optimizer state), i.e. activations and
temporaries.

- On CUDA: ``torch.cuda.max_memory_allocated`` (reset before each step) minus
  ``torch.cuda.memory_allocated`` before it.
- On CPU: the process's peak resident set size (``VmHWM``, reset before each step through
  ``/proc/self/clear_refs``) minus its resident size before the step. The child runs with
  ``MALLOC_MMAP_THRESHOLD_=65536`` so glibc hands every large block back to the system when it is
  freed, and the resident size follows the live tensors.

The time is the median step. Targets (issue 14): at least 40% less peak activation memory for at
most 35% more step time.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time

FULL = {"deeplab": (8, (512, 512)), "frcnn": (2, (800, 1216))}
CPU = {"deeplab": (2, (256, 256)), "frcnn": (1, (800, 1216))}


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class _Meter:
    """Step memory in MiB: CUDA allocator statistics, or resident set size on CPU."""

    def __init__(self, device):
        import torch

        self.torch, self.device = torch, device

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
            self.base = self.torch.cuda.memory_allocated()
            return
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident size
        self.base = _rss_kib("VmRSS") * 1024

    def peak(self) -> float:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()
            return (self.torch.cuda.max_memory_allocated() - self.base) / 2**20
        return (_rss_kib("VmHWM") * 1024 - self.base) / 2**20


def _build(case: str, checkpointing: bool, batch: int, size: tuple[int, int], device):
    """(model, step inputs) for one case."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    if case == "deeplab":
        from resvision.heads.segmentation import SegModelConfig, build_segmentation_model

        def criterion(logits, target):
            return {"loss_ce": F.cross_entropy(logits, target, ignore_index=255)}

        cfg = SegModelConfig(
            backbone="resnet101",
            output_stride=8,
            activation_checkpointing=checkpointing,
            arch="deeplabv3plus",
            num_classes=21,
        )
        model = build_segmentation_model(cfg, criterion)
        images = torch.rand(batch, 3, *size, generator=gen) * 255
        masks = torch.randint(0, 21, (batch, *size), generator=gen)
        return model.to(device), (images.to(device), masks.to(device))
    from resvision.heads.detection import FasterRCNN, FasterRCNNConfig

    cfg = FasterRCNNConfig(
        backbone="resnet101",
        norm="frozen_bn",
        frozen_stages=2,
        activation_checkpointing=checkpointing,
        num_classes=80,
    )
    model = FasterRCNN(cfg.create_backbone(("c2", "c3", "c4", "c5")), cfg)
    images = [(torch.rand(3, *size, generator=gen) * 255).to(device) for _ in range(batch)]
    targets = []
    for _ in range(batch):
        xy = torch.rand(8, 2, generator=gen) * torch.tensor([size[1] * 0.7, size[0] * 0.7])
        wh = torch.rand(8, 2, generator=gen) * torch.tensor([size[1] * 0.25, size[0] * 0.25]) + 16
        boxes = torch.cat([xy, xy + wh], 1)
        labels = torch.randint(1, 81, (8,), generator=gen)
        targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
    return model.to(device), (images, targets)


def worker(case: str, checkpointing: bool, batch: int, size, steps: int, device_name: str) -> dict:
    """One measurement, in this (fresh) process."""
    import torch

    device = torch.device(device_name)
    model, (inputs, targets) = _build(case, checkpointing, batch, size, device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    meter = _Meter(device)

    def step() -> None:
        losses = model(inputs, targets)
        sum(losses.values()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # gradients stay allocated: not in the step's

    step()  # warm-up: gradients and momentum buffers now exist
    times, peaks = [], []
    for _ in range(steps):
        meter.start()
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        peaks.append(meter.peak())
    return {"step_s": statistics.median(times), "peak_mib": max(peaks), "times": times}


def _child(case, checkpointing, batch, size, steps, device) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        case,
        str(int(checkpointing)),
        str(batch),
        f"{size[0]}x{size[1]}",
        str(steps),
        device,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{case} (checkpointing={checkpointing}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _machine(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} CPU"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="resvision benchmark depth", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    p.add_argument("--cases", default="deeplab,frcnn", help="deeplab, frcnn or both")
    p.add_argument("--cpu-sizes", action="store_true", help=f"CPU-sized runs: {CPU}")
    p.add_argument("--deeplab-batch", type=int, default=None)
    p.add_argument("--deeplab-size", type=int, default=None, help="square side")
    p.add_argument("--frcnn-batch", type=int, default=None)
    p.add_argument("--frcnn-size", default=None, help="HxW, e.g. 800x1216")
    p.add_argument("--steps", type=int, default=2, help="timed steps per setting")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.worker:
        case, cp, batch, size, steps, device = args.worker
        h, w = (int(v) for v in size.split("x"))
        print(json.dumps(worker(case, cp == "1", int(batch), (h, w), int(steps), device)))
        return 0

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    sizes = dict(CPU if args.cpu_sizes else FULL)
    if args.deeplab_batch or args.deeplab_size:
        b, s = sizes["deeplab"]
        side = args.deeplab_size or s[0]
        sizes["deeplab"] = (args.deeplab_batch or b, (side, side))
    if args.frcnn_batch or args.frcnn_size:
        b, s = sizes["frcnn"]
        hw = tuple(int(v) for v in args.frcnn_size.split("x")) if args.frcnn_size else s
        sizes["frcnn"] = (args.frcnn_batch or b, hw)
    names = {"deeplab": "DeepLabV3+ R-101 (OS 8)", "frcnn": "Faster R-CNN R-101 FPN"}
    measure = "CUDA max_memory_allocated" if device.startswith("cuda") else "peak RSS delta"
    print(f"machine: {_machine(device)}; memory measure: {measure}")
    header = "| model | batch x size | checkpointing | step memory (MiB) | step time (s) |"
    lines = [header, "|---|---|---|---:|---:|"]
    results = []
    for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
        if case not in names:
            raise SystemExit(f"unknown case {case!r}; choose deeplab, frcnn")
        batch, size = sizes[case]
        row = {}
        for cp in (False, True):
            print(
                f"{names[case]}, batch {batch} x {size[0]}x{size[1]}, checkpointing={cp} ...",
                flush=True,
            )
            row[cp] = _child(case, cp, batch, size, args.steps, device)
            lines.append(
                f"| {names[case]} | {batch} x {size[0]}x{size[1]} | {'on' if cp else 'off'} | "
                f"{row[cp]['peak_mib']:.0f} | {row[cp]['step_s']:.2f} |"
            )
        saved = 1 - row[True]["peak_mib"] / row[False]["peak_mib"]
        slower = row[True]["step_s"] / row[False]["step_s"] - 1
        verdict = "met" if saved >= 0.40 and slower <= 0.35 else "not met"
        results.append(
            {
                "case": case,
                "batch": batch,
                "size": size,
                "off": row[False],
                "on": row[True],
                "memory_saved": saved,
                "time_cost": slower,
            }
        )
        lines.append(
            f"| {names[case]}: {100 * saved:.0f}% less memory, {100 * slower:+.0f}% time "
            f"(target >= 40% for <= +35%: {verdict}) | | | | |"
        )
    print("\n".join(lines))
    if args.json:
        from pathlib import Path

        from resvision.tasks.engine.files import atomic_write_text

        record = {"machine": _machine(device), "measure": measure, "results": results}
        atomic_write_text(Path(args.json), json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
