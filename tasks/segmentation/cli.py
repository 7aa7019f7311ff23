"""``resvision predict|export|benchmark segmentation``: label PNGs and overlays, ONNX, speed."""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from resvision.datasets.images import list_images, read_rgb
from resvision.datasets.segmentation import voc_palette
from resvision.tasks.engine.config import apply_overrides

from .inference import Segmenter, overlay, save_label_png

FMT = argparse.ArgumentDefaultsHelpFormatter


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files as given; folders expanded to their images (sorted)."""
    out: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            out += list_images(path)
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"input {item!r} is neither an image file nor a folder")
    if not out:
        raise FileNotFoundError(f"no images found in {inputs}")
    return out


# -- predict -----------------------------------------------------------------------------------
def predict_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="resvision predict segmentation",
        formatter_class=FMT,
        description="Write a palette label PNG (pixel = class index) and a colour overlay per image.",
    )
    p.add_argument("inputs", nargs="+", help="image files and/or folders")
    p.add_argument("--checkpoint", required=True, help="a run folder (best.pt) or checkpoint file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--mode",
        choices=("whole", "slide"),
        default=None,
        help="inference mode (default: the run's)",
    )
    p.add_argument(
        "--tta", action="store_true", help="flip + scales 0.75/1.0/1.25 (averaged probabilities)"
    )
    p.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="inference.* overrides, e.g. inference.crop_size=[512,512]",
    )
    args = p.parse_args(argv)
    overrides = list(args.set)
    if args.mode:
        overrides.append(f"inference.mode={args.mode}")
    if args.tta:
        overrides += ["inference.flip=true", "inference.scales=[0.75,1.0,1.25]"]
    seg = Segmenter.from_checkpoint(args.checkpoint, device=args.device, overrides=overrides)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    palette = voc_palette()
    counts = np.zeros(len(seg.class_names), np.int64)
    files = expand_inputs(args.inputs)
    t0 = time.perf_counter()
    for path in files:
        image = read_rgb(path)
        labels = seg.predict(image)[0]
        counts += np.bincount(labels.reshape(-1), minlength=len(counts))[: len(counts)]
        save_label_png(labels, out / f"{path.stem}.png", palette)
        blend = overlay(image, labels, palette)
        import cv2

        cv2.imwrite(str(out / f"{path.stem}_overlay.jpg"), cv2.cvtColor(blend, cv2.COLOR_RGB2BGR))
    took = time.perf_counter() - t0
    print(f"{len(files)} images in {took:.1f} s -> {out}")
    share = counts / max(counts.sum(), 1)
    print(
        "pixel share: "
        + ", ".join(f"{n} {100 * s:.1f}%" for n, s in zip(seg.class_names, share) if s > 0)
    )
    return 0


# -- export ------------------------------------------------------------------------------------
class ExportWrapper(nn.Module):
    """``images: (N, 3, H, W)`` float in [0, 255] -> ``logits: (N, K, H, W)`` (any N, H, W)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)["out"]


def export_onnx(
    model: nn.Module, path: Path, *, size: tuple[int, int] = (256, 320), opset: int = 17
) -> Path:
    """Export with dynamic batch, height and width."""
    wrapper = ExportWrapper(model.float().cpu()).eval()
    example = torch.rand(2, 3, *size) * 255
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # shape checks traced as constants are fine here: check_onnx verifies other sizes
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        _export(wrapper, example, path, opset)
    return path


def _export(wrapper: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    torch.onnx.export(
        wrapper,
        (example,),
        str(path),
        input_names=["images"],
        output_names=["logits"],
        dynamic_axes={
            "images": {0: "batch", 2: "height", 3: "width"},
            "logits": {0: "batch", 2: "height", 3: "width"},
        },
        opset_version=opset,
        dynamo=False,
    )


def check_onnx(model: nn.Module, path: Path, images: list[np.ndarray]) -> list[dict]:
    """Compare onnxruntime with PyTorch on ``images`` (each its own size; also as a batch of 2)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = model.eval().float().cpu()
    results = []
    batches = [np.stack([img.transpose(2, 0, 1)] * 2) for img in images]
    for batch in batches:
        x = batch.astype(np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x))["out"].numpy()
        got = session.run(["logits"], {"images": x})[0]
        results.append(
            {
                "shape": tuple(x.shape),
                "max_abs_diff": float(np.abs(got - ref).max()),
                "label_agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
            }
        )
    return results


def export_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="resvision export segmentation",
        formatter_class=FMT,
        description="Export to ONNX (dynamic batch, height and width) and check it against PyTorch with onnxruntime.",
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--format", choices=("onnx",), default="onnx")
    p.add_argument(
        "--out", default=None, help="output file (default: next to the checkpoint, model.onnx)"
    )
    p.add_argument("--opset", type=int, default=17)
    p.add_argument(
        "--check-images",
        nargs="*",
        default=[],
        help="images to compare on (default: two random images of different sizes)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-3,
        help="largest allowed |onnx - torch| logit difference",
    )
    args = p.parse_args(argv)
    from .task import SegmentationTask

    model, _, _ = SegmentationTask().load_for_inference(args.checkpoint, device="cpu")
    ckpt = Path(args.checkpoint)
    out = Path(args.out) if args.out else (ckpt if ckpt.is_dir() else ckpt.parent) / "model.onnx"
    export_onnx(model, out, opset=args.opset)
    if args.check_images:
        images = [read_rgb(p) for p in expand_inputs(args.check_images)]
    else:
        rng = np.random.default_rng(0)
        images = [(rng.random((h, w, 3)) * 255).astype(np.uint8) for h, w in ((97, 131), (160, 96))]
    worst = 0.0
    for r in check_onnx(model, out, images):
        worst = max(worst, r["max_abs_diff"])
        print(
            f"onnxruntime vs torch on {r['shape']}: max |diff| {r['max_abs_diff']:.2e}, labels agree {100 * r['label_agreement']:.2f}%"
        )
    if worst > args.tolerance:
        print(f"FAILED: difference {worst:.2e} above --tolerance {args.tolerance:g}")
        return 1
    print(f"wrote {out}")
    return 0


# -- benchmark ---------------------------------------------------------------------------------
def _train_throughput(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    loss_fn,
    *,
    amp,
    channels_last,
    steps,
    warmup,
) -> float:
    device = images.device
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    model.train()

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(model, images, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * len(images) / (time.perf_counter() - t0)


def _infer_throughput(model, fn, images, *, amp, steps, warmup) -> float:
    device = images.device
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        for _ in range(warmup):
            fn(images)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            fn(images)
        _sync(device)
    return steps * len(images) / (time.perf_counter() - t0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark(
    *,
    arch: str = "unet",
    backbone: str = "resnet50",
    batch: int = 16,
    size: int = 512,
    steps: int = 10,
    warmup: int = 3,
    rounds: int = 1,
    device: str = "auto",
) -> list[dict]:
    """Training and inference images/s: resvision's default recipe vs smp's model, same shapes."""
    import segmentation_models_pytorch as smp

    from resvision.tasks.engine.loop import resolve_device

    from .config import SegConfig
    from .task import SegmentationTask

    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    num_classes = 21
    task = SegmentationTask()
    cfg = apply_overrides(
        SegConfig(),
        [f"model.arch={arch}", f"model.backbone={backbone}", f"model.num_classes={num_classes}", "model.aux_weight=0",
         "model.output_stride=16" if arch.startswith("deeplab") else "model.output_stride=none",
         f"model.head_kernel={3 if arch == 'unet' else 1}"],
    )  # fmt: skip
    torch.manual_seed(0)
    images = (torch.rand(batch, 3, size, size, device=dev) * 255).round()
    targets = torch.randint(0, num_classes, (batch, size, size), device=dev)
    ours = task.build_model(cfg).to(dev)
    smp_cls = {
        "unet": smp.Unet,
        "deeplabv3plus": smp.DeepLabV3Plus,
        "deeplabv3": smp.DeepLabV3,
        "fpn": smp.FPN,
    }[arch]
    kwargs = {"encoder_output_stride": 16} if arch.startswith("deeplab") else {}
    theirs = smp_cls(backbone, encoder_weights=None, classes=num_classes, **kwargs).to(dev)
    normalized = ours.backbone.normalization.normalize(images)
    ce = nn.CrossEntropyLoss(ignore_index=255)

    def our_loss(model, x, t):
        return sum(model(x, t).values())

    def smp_loss(model, x, t):
        return ce(model(x).float(), t)

    # resvision's default GPU recipe: bf16 autocast + channels_last (fp32 on CPU, where bf16
    # autocast is usually slower)
    our_amp, our_cl = ("bf16", True) if cuda else ("off", False)
    setups = [
        (f"resvision {arch}-{backbone} default ({our_amp}{' + channels_last' if our_cl else ''})",
         ours, images, our_loss, lambda x: ours(x)["out"], our_amp, our_cl),
        ("smp naive fp32", theirs, normalized, smp_loss, theirs, "off", False),
    ]  # fmt: skip
    if cuda:
        setups.append(("smp best (bf16 + channels_last)", theirs, normalized, smp_loss, theirs, "bf16", True))  # fmt: skip
    # setups alternate over `rounds` rounds and each keeps its best: the GPU's clock ramp and
    # background noise then favour no one
    rows = [{"setup": name, "train": 0.0, "infer": 0.0} for name, *_ in setups]
    for _ in range(rounds):
        for row, (_, model, x, loss_fn, fn, amp, cl) in zip(rows, setups):
            model = model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
            x = x.contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
            train = _train_throughput(
                model, x, targets, loss_fn, amp=amp, channels_last=cl, steps=steps, warmup=warmup
            )
            infer = _infer_throughput(model, fn, x, amp=amp, steps=steps, warmup=warmup)
            row["train"], row["infer"] = max(row["train"], train), max(row["infer"], infer)  # fmt: skip
    for r in rows:
        r.update(
            device=str(torch.cuda.get_device_name(dev) if cuda else "cpu"), batch=batch, size=size
        )
    return rows


def benchmark_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="resvision benchmark segmentation",
        formatter_class=FMT,
        description="Training and inference images/s of resvision's default recipe against segmentation-models-pytorch's same architecture (naive fp32, and bf16 + channels_last on GPU), in one run.",
    )
    p.add_argument("--arch", choices=("unet", "deeplabv3", "deeplabv3plus", "fpn"), default="unet")
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--batch", type=int, default=None, help="default: 16 on GPU, 2 on CPU")
    p.add_argument(
        "--size", type=int, default=None, help="square input size (default: 512 on GPU, 256 on CPU)"
    )
    p.add_argument(
        "--steps", type=int, default=None, help="timed steps (default: 20 on GPU, 3 on CPU)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="alternating rounds, best kept (default: 2 on GPU, 1 on CPU)",
    )
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available() and args.device != "cpu"
    rows = benchmark(
        arch=args.arch, backbone=args.backbone, batch=args.batch or (16 if cuda else 2), size=args.size or (512 if cuda else 256),
        steps=args.steps or (20 if cuda else 3), warmup=5 if cuda else 1, rounds=args.rounds or (2 if cuda else 1), device=args.device,
    )  # fmt: skip
    from resvision.tasks.table import format_table

    base = rows[1]["train"]
    table = [
        [
            r["setup"],
            r["device"],
            f"{r['batch']}x{r['size']}x{r['size']}",
            r["train"],
            r["train"] / base,
            r["infer"],
        ]
        for r in rows
    ]
    print(
        format_table(
            ("setup", "device", "batch", "train img/s", "vs smp fp32", "infer img/s"),
            table,
            floatfmt=".2f",
        )
    )
    return 0
