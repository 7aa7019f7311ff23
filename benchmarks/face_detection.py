"""``resvision benchmark face-detection``: our RetinaFace-R50 against the PyTorch port's.

Everything is measured in one run on one machine, with the port's model re-implemented in
``tests/tasks/face_detection/retinaface_reference.py`` (its module names, so its ``state_dict`` is a
``Resnet50_Final.pth``) holding seeded random weights that ours loads:

1. inference images/s, as each is used: the port's forward (one batch when the images share a
   size, else one image at a time, as its ``detect.py``) followed by its per-image numpy decode,
   threshold, sort and ``py_cpu_nms``; ours is ``FaceDetector.detect`` (a padded batch, decode
   and NMS batched on the device). Square images and "original-size" photos of mixed sizes, at
   batch 1 and 16; whether the detections are identical (same faces, scores within 1e-4,
   boxes and landmarks within 1e-2 px) image by image;
2. a training step (forward, loss, backward, SGD) with our batched multibox loss and with the
   port's per-image matching loop, on the same model and batch; and the loss alone;
3. the WIDER FACE protocol on a generated val-sized set (3,226 images, ~39k faces): our
   vectorized evaluator against the official loops (on a subset, scaled), with the same APs.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from resvision.tasks.engine.runtime import resolve_device
from resvision.tasks.engine.table import format_table

from .timing import best_of_rounds, device_name, items_per_second, sgd_train_step

TESTS = Path(__file__).resolve().parents[1] / "tests" / "tasks" / "face_detection"


def _reference(name: str):
    """A module of the tests' reference code (the port's model and the WIDER evaluation)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TESTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def photos(count: int, sizes: tuple[int, int] | None, seed: int = 0) -> list[np.ndarray]:
    """Synthetic group photos: ``sizes=(h, w)`` for all, or None for mixed "original" sizes
    (each side 300-480 px)."""
    from resvision.datasets.face_detection import SyntheticFaceScenes

    out = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        h, w = sizes or (int(rng.integers(300, 481)), int(rng.integers(300, 481)))
        side = max(h, w)
        scene = SyntheticFaceScenes(seed=seed + i, min_side=side, max_side=side, max_faces=8)
        out.append(np.ascontiguousarray(scene.scene(0).image[:h, :w]))
    return out


def port_infer(net, images: list[np.ndarray], device: torch.device) -> list[np.ndarray]:
    """The port as users run it: one forward for equal sizes (else per image), then its
    per-image host-side post-processing."""
    ref = _reference("retinaface_reference")
    same = len({im.shape for im in images}) == 1
    groups = [images] if same else [[im] for im in images]
    out = []
    for group in groups:
        batch = np.stack([np.float32(im[..., ::-1]) for im in group])
        batch -= (104, 117, 123)  # in place, as detect.py: float32
        x = torch.from_numpy(batch.transpose(0, 3, 1, 2).copy()).to(device)
        with torch.no_grad():
            loc, conf, landms = net(x)
        h, w = group[0].shape[:2]
        priors = ref.PriorBox(ref.CFG_RE50, image_size=(h, w)).forward().to(device)
        for i in range(len(group)):
            out.append(ref.port_postprocess(loc[i], conf[i], landms[i], priors, (h, w)))
    return out


def same_faces(ref: np.ndarray, got: dict, tol: float = 1e-2) -> bool:
    if len(ref) != len(got["scores"]):
        return False
    if not len(ref):
        return True
    return (
        np.abs(ref[:, 4] - got["scores"]).max() <= 1e-4
        and np.abs(ref[:, :4] - got["boxes"]).max() <= tol
        and np.abs(ref[:, 5:] - got["landmarks"].reshape(-1, 10)).max() <= tol
    )


def bench_inference(device: torch.device, *, square: int, batches, steps: int, rounds: int):
    from resvision.tasks.face_detection.inference import FaceDetector

    ref = _reference("retinaface_reference")
    net = ref.randomized_port_model(0).to(device)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "Resnet50_Final.pth"
        torch.save(net.state_dict(), path)
        padded = FaceDetector.from_checkpoint(
            path, device=str(device), overrides=["model.test.pad_batches=true"]
        )
        by_size = FaceDetector.from_checkpoint(
            path, device=str(device), overrides=["model.test.pad_batches=false"]
        )
    rows = []
    for label, sizes in ((f"{square}x{square}", (square, square)), ("original sizes", None)):
        for batch in batches:
            images = photos(batch, sizes)
            setups = {"port (detect.py)": None, "resvision": padded}
            if sizes is None and batch > 1:  # the default (auto) is this one on a CPU
                setups = {"port (detect.py)": None, "resvision, padded batch": padded}
                setups["resvision, one pass per size"] = by_size

            def measure(name, images=images, batch=batch, setups=setups):
                if setups[name] is None:
                    step = lambda: port_infer(net, images, device)  # noqa: E731
                else:
                    step = lambda: setups[name].detect(images, batch_size=batch)  # noqa: E731
                return [items_per_second(step, items=batch, steps=steps, device=device)]

            rates = best_of_rounds(list(setups), rounds, measure)
            expected = port_infer(net, images, device)
            faces = sum(len(e) for e in expected)
            for (name, det), (rate,) in zip(setups.items(), rates):
                same = batch
                if det is not None:
                    got = det.detect(images, batch_size=batch)
                    same = sum(same_faces(e, g) for e, g in zip(expected, got))
                speed = rate / rates[0][0]
                rows.append([label, batch, name, rate, speed, faces, f"{same}/{batch}"])
    return rows


def training_batch(size: int, batch: int, device: torch.device):
    """Augmented synthetic scenes: images, our targets (pixels) and the port's (normalized rows
    ``x1 y1 x2 y2, 10 landmark values, label``)."""
    from resvision.datasets.face_detection import RetinaFaceTrainTransform, SyntheticFaceScenes

    scenes = SyntheticFaceScenes(seed=1, min_side=size, max_side=int(size * 1.3), max_faces=8)
    transform = RetinaFaceTrainTransform(image_size=size)
    images, targets, port_targets = [], [], []
    for i in range(batch):
        s = scenes.scene(i)
        has = np.ones(len(s.boxes), bool)
        image, boxes, points, has = transform(s.image, s.boxes, s.landmarks, has, i)
        images.append(torch.from_numpy(image.transpose(2, 0, 1).copy()))
        t = {
            "boxes": torch.from_numpy(boxes),
            "landmarks": torch.from_numpy(points),
            "has_landmarks": torch.from_numpy(has),
        }
        targets.append({k: v.to(device) for k, v in t.items()})
        label = torch.where(t["has_landmarks"], 1.0, -1.0)[:, None]
        row = torch.cat([t["boxes"], t["landmarks"].reshape(-1, 10), label], 1)
        port_targets.append((row / torch.tensor([size] * 14 + [1.0])).to(device))
    return torch.stack(images).to(device), targets, port_targets


def bench_training(device: torch.device, *, size: int, batch: int, steps: int, rounds: int):
    """Training steps of retinaface_r50 (fp32) with our loss and with the port's loop."""
    from resvision.heads.retinaface import RetinaFace, RetinaFaceConfig, multibox_loss

    ref = _reference("retinaface_reference")
    torch.manual_seed(0)
    cfg = RetinaFaceConfig(input_format="bgr_mean")
    model = RetinaFace(cfg.create_backbone(cfg.levels), cfg).to(device)
    x, targets, port_targets = training_batch(size, batch, device)
    with torch.no_grad():
        outputs = model.head_outputs(model.normalize(x))
    priors, _ = model.priors(outputs[3], device)
    outputs = outputs[:3]

    def ours(logits, deltas, points):
        losses = multibox_loss(logits, deltas, points, priors, targets, cfg.loss, (0.1, 0.2))
        return sum(losses.values())

    def port(logits, deltas, points):
        loss_l, loss_c, loss_landm = ref.port_multibox_loss(
            (deltas, logits, points), priors / size, port_targets, device=device
        )
        return 2.0 * loss_l + loss_c + loss_landm

    def measure(loss):
        step = sgd_train_step(
            model,
            lambda: loss(*model.head_outputs(model.normalize(x))[:3]),
            amp="off",
            device=device,
        )
        train = items_per_second(step, items=batch, steps=steps, device=device)
        calls = items_per_second(lambda: loss(*outputs), items=1, steps=5, device=device)
        return train, calls

    (port_train, port_calls), (ours_train, ours_calls) = best_of_rounds(
        [port, ours], rounds, measure
    )
    values = [float(port(*outputs)), float(ours(*outputs))]
    faces = sum(len(t["boxes"]) for t in targets)
    shape = f"{batch}x{size}x{size}"
    return [
        [
            "port MultiBoxLoss (per-image loop)",
            shape,
            faces,
            port_train,
            1000 / port_calls,
            1.0,
            values[0],
        ],
        [
            "resvision multibox_loss (batched)",
            shape,
            faces,
            ours_train,
            1000 / ours_calls,
            ours_train / port_train,
            values[1],
        ],
    ]


def bench_wider(
    num_images: int = 3226, mean_faces: float = 12.0, false_positives: int = 6, subset: int = 200
):
    """Our WIDER evaluator on a val-sized set; the official loops on a ``subset``-image set
    generated the same way (the same APs there), their time scaled to the whole set."""
    from resvision.datasets.face_detection import read_wider_val
    from resvision.tasks.face_detection.evaluation import wider_face_ap, write_wider_txt

    generated = _reference("wider_generated")
    official = _reference("widerface_reference")
    per_event = 53  # 61 events in WIDER FACE val
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, count in (("full", num_images), ("subset", subset)):
            (tmp / name).mkdir()
            events = max(1, round(count / per_event))
            generated.write_wider_mats(tmp / name, 0, events, per_event, mean_faces=mean_faces)
        val = read_wider_val(tmp / "full")
        preds = generated.generated_predictions(val, 0, false_positives=false_positives)
        t0 = time.perf_counter()
        ours = wider_face_ap(val, preds)
        ours_time = time.perf_counter() - t0
        sub = read_wider_val(tmp / "subset")
        sub_preds = generated.generated_predictions(sub, 0, false_positives=false_positives)
        write_wider_txt(tmp / "txt", sub, sub_preds)
        t0 = time.perf_counter()
        reference = official.evaluation(str(tmp / "txt"), str(tmp / "subset"))
        ref_time = (time.perf_counter() - t0) * len(val) / len(sub)
        ours_sub = wider_face_ap(sub, sub_preds)
    same = np.allclose([ours_sub[s] for s in ("easy", "medium", "hard")], reference, atol=1e-12)
    faces = sum(len(b) for b in val.boxes)
    detections = sum(len(p) for p in preds)
    return [
        [
            f"official loops ({len(sub)} images, scaled)",
            len(val),
            faces,
            detections,
            ref_time,
            1.0,
            "-",
        ],
        [
            "resvision (vectorized)",
            len(val),
            faces,
            detections,
            ours_time,
            ref_time / ours_time,
            "yes" if same else "NO",
        ],
    ], ours


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="resvision benchmark face-detection",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=__doc__,
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=int, default=None, help="square size (640 on GPU, 320 on CPU)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    p.add_argument("--steps", type=int, default=None, help="timed calls (10 on GPU, 1 on CPU)")
    p.add_argument("--rounds", type=int, default=2, help="rounds over the set-ups (best kept)")
    p.add_argument("--train-size", type=int, default=None, help="640 on GPU, 256 on CPU")
    p.add_argument("--train-batch", type=int, default=None, help="8 on GPU, 2 on CPU")
    p.add_argument("--wider-images", type=int, default=3226)
    p.add_argument(
        "--wider-false-positives", type=int, default=6, help="at most this many per image, drawn"
    )
    p.add_argument("--skip", nargs="*", default=[], choices=("inference", "training", "wider"))
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    steps = args.steps or (10 if cuda else 1)
    print(f"RetinaFace-R50 (seeded random weights) on {device_name(device)}, fp32\n")
    if "inference" not in args.skip:
        rows = bench_inference(
            device,
            square=args.size or (640 if cuda else 320),
            batches=args.batches,
            steps=steps,
            rounds=args.rounds,
        )
        print(
            format_table(
                (
                    "images",
                    "batch",
                    "model",
                    "img/s",
                    "vs port",
                    "faces",
                    "identical",
                ),
                rows,
                floatfmt=".2f",
            )
        )
    if "training" not in args.skip:
        size = args.train_size or (640 if cuda else 256)
        rows = bench_training(
            device,
            size=size,
            batch=args.train_batch or (8 if cuda else 2),
            steps=steps,
            rounds=args.rounds,
        )
        print()
        print(
            format_table(
                (
                    "loss",
                    "batch",
                    "faces",
                    "train img/s",
                    "loss ms",
                    "train vs port",
                    "loss value",
                ),
                rows,
                floatfmt=".3f",
            )
        )
    if "wider" not in args.skip:
        rows, aps = bench_wider(args.wider_images, false_positives=args.wider_false_positives)
        print(f"\nWIDER FACE protocol on a generated val-sized set (APs {aps})\n")
        print(
            format_table(
                ("evaluator", "images", "faces", "detections", "seconds", "speed-up", "same APs"),
                rows,
                floatfmt=".3f",
            )
        )
    return 0
