"""RetinaFace against the PyTorch port (re-implemented in ``retinaface_reference``): its weights
load and give the same faces, boxes and landmarks; priors and the multibox loss are the port's;
any registry backbone works; the model refuses levels and strides that do not fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resvision.datasets.face_detection import SyntheticFaceScenes
from resvision.heads.retinaface import RetinaFace, RetinaFaceConfig, make_priors, multibox_loss
from resvision.heads.retinaface.config import MultiboxLossConfig
from resvision.tasks.face_detection.inference import FaceDetector
from resvision.tasks.face_detection.model import convert_port_state_dict

from .retinaface_reference import (
    CFG_RE50,
    PortRetinaFace,
    PriorBox,
    port_detect,
    port_multibox_loss,
    randomized_port_model,
)


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    """The port's ResNet-50 model with seeded random weights, saved as its checkpoints are."""
    net = randomized_port_model(0)
    folder = tmp_path_factory.mktemp("port")
    torch.save(net.state_dict(), folder / "Resnet50_Final.pth")
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, folder / "dp.pth")
    return net, folder


def _photos(count: int = 3):
    """Synthetic scenes (real faces for the score map to find) of odd sizes."""
    scenes = SyntheticFaceScenes(seed=5, min_side=90, max_side=130, max_faces=3)
    return [scenes.scene(i).image for i in range(count)]


# Both models run the same float32 network through different module graphs (and, in the batch
# test, other batch shapes), so oneDNN may pick other kernels on another CPU or thread count:
# measured with 1 and 2 threads, and ATen's native convolutions on either side, scores differ by
# 3e-7 at most and box and landmark coordinates by 9e-5 px (boxes up to 250 px, decoded from
# priors of up to 512 px). The tolerances keep 100x of headroom and stay far below what a real
# difference moves: the size variance used for the centre moves boxes by 28 px; the port's BGR
# means applied in RGB order, or a leaky slope of 0.1 in the FPN, change which faces are found.
BOX_TOL = 1e-2  # px
SCORE_TOL = 3e-5


def assert_same_faces(ref: np.ndarray, got: dict, *, box_tol=BOX_TOL, score_tol=SCORE_TOL) -> None:
    """The port's ``(D, 15)`` rows and our result: the same faces in the same order."""
    assert len(ref) == len(got["scores"]) > 0
    np.testing.assert_allclose(got["scores"], ref[:, 4], atol=score_tol, rtol=0)
    np.testing.assert_allclose(got["boxes"], ref[:, :4], atol=box_tol, rtol=0)
    np.testing.assert_allclose(got["landmarks"].reshape(-1, 10), ref[:, 5:], atol=box_tol, rtol=0)


@pytest.mark.parametrize("file", ["Resnet50_Final.pth", "dp.pth"])
def test_port_weights_give_the_ports_faces(port, file):
    """Resnet50_Final.pth (bare or with DataParallel's module. prefix) runs as retinaface_r50
    with the port's input convention: the same scores, boxes and landmarks as detect.py."""
    net, folder = port
    det = FaceDetector.from_checkpoint(folder / file, device="cpu")
    assert det.model.cfg.input_format == "bgr_mean"
    for rgb in _photos(3 if file == "Resnet50_Final.pth" else 1):
        ref = port_detect(net, np.ascontiguousarray(rgb[..., ::-1]))
        (got,) = det.detect(rgb)
        assert_same_faces(ref, got)


def test_a_batch_of_equal_sizes_gives_each_images_faces(port):
    net, folder = port
    det = FaceDetector.from_checkpoint(folder / "Resnet50_Final.pth", device="cpu")
    photos = [p[:88, :88] for p in _photos()]
    batched = det.detect(photos, batch_size=3)
    for rgb, got in zip(photos, batched):
        assert_same_faces(port_detect(net, np.ascontiguousarray(rgb[..., ::-1])), got)


def test_mixed_sizes_run_one_pass_per_size_on_a_cpu_unless_padding_is_asked(port):
    """``model.test.pad_batches`` null (auto) on a CPU and false: every photo of a mixed-size
    batch gives exactly its faces alone (and the port's); true pads them into one batch."""
    net, folder = port
    photos = _photos()
    assert len({p.shape for p in photos}) == 3
    path = folder / "Resnet50_Final.pth"
    det = FaceDetector.from_checkpoint(path, device="cpu")
    assert det.model.cfg.test.pad_batches is None
    alone = [det.detect(p)[0] for p in photos]
    for setting in ("null", "false"):
        run = FaceDetector.from_checkpoint(
            path, device="cpu", overrides=[f"model.test.pad_batches={setting}"]
        )
        for got, one, rgb in zip(run.detect(photos, batch_size=3), alone, photos):
            assert all(np.array_equal(got[k], one[k]) for k in one)  # the same ops, alone
            assert_same_faces(port_detect(net, np.ascontiguousarray(rgb[..., ::-1])), got)
    padded = FaceDetector.from_checkpoint(
        path, device="cpu", overrides=["model.test.pad_batches=true"]
    )
    got = padded.detect(photos, batch_size=3)
    assert all(len(g["scores"]) and g["landmarks"].shape[1:] == (5, 2) for g in got)
    # one padded pass: the random-weight network sees other borders than alone (a trained one
    # moves little), so some box differs: the setting took effect
    assert any(not np.array_equal(g["boxes"], a["boxes"]) for g, a in zip(got, alone))


def test_port_keys_map_one_to_one():
    sd = PortRetinaFace().state_dict()
    converted = convert_port_state_dict(sd)
    cfg = RetinaFaceConfig(input_format="bgr_mean")
    ours = RetinaFace(cfg.create_backbone(cfg.levels), cfg).state_dict()
    assert set(converted) == set(ours)
    assert all(converted[k].shape == ours[k].shape for k in ours)


def test_priors_are_the_ports_in_pixels():
    for h, w in ((97, 131), (64, 64)):
        shapes = [(-(-h // s), -(-w // s)) for s in (8, 16, 32)]
        ours, corners = make_priors(shapes, (8, 16, 32), ((16, 32), (64, 128), (256, 512)))
        ref = PriorBox(CFG_RE50, (h, w)).forward() * torch.tensor([w, h, w, h])
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)
        torch.testing.assert_close(corners, ours[:, :2] - _half_steps(shapes))


def _half_steps(shapes):
    return torch.cat(
        [torch.full((fh * fw * 2, 2), s / 2) for (fh, fw), s in zip(shapes, (8, 16, 32))]
    )


def _loss_case(seed: int):
    """Random head outputs and faces for a 96 x 96 batch of 3: faces with and without
    landmarks, a tiny face no prior overlaps by 0.2, an image without faces."""
    g = torch.Generator().manual_seed(seed)
    size = 96
    shapes = [(12, 12), (6, 6), (3, 3)]
    priors, _ = make_priors(shapes, (8, 16, 32), ((16, 32), (64, 128), (256, 512)))
    p = len(priors)
    logits = torch.randn(3, p, 2, generator=g)
    boxes = torch.randn(3, p, 4, generator=g) * 0.5
    points = torch.randn(3, p, 10, generator=g) * 0.5
    faces = [
        torch.tensor([[10.0, 12, 40, 46], [50, 20, 90, 70], [70, 75, 74, 79]]),
        # one best prior for both: the later face claims it, though the other overlaps more
        torch.tensor([[6.0, 51, 31, 81], [5.0, 50, 30, 80]]),
        torch.zeros(0, 4),
    ]
    targets = []
    for k, b in enumerate(faces):
        lm = b[:, None, :2] + torch.rand(len(b), 5, 2, generator=g) * (
            b[:, None, 2:] - b[:, None, :2]
        )
        has = (
            torch.tensor([True, False, True][: len(b)])
            if k == 0
            else torch.ones(len(b), dtype=torch.bool)
        )
        targets.append({"boxes": b, "landmarks": lm, "has_landmarks": has})
    return logits, boxes, points, priors, targets, size


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multibox_loss_equals_the_ports(seed):
    logits, boxes, points, priors, targets, size = _loss_case(seed)
    ours = multibox_loss(logits, boxes, points, priors, targets, MultiboxLossConfig(), (0.1, 0.2))
    rows = []
    for t in targets:
        label = torch.where(t["has_landmarks"], 1.0, -1.0)[:, None]
        rows.append(
            torch.cat([t["boxes"], t["landmarks"].reshape(-1, 10), label], 1)
            / torch.tensor([size] * 14 + [1.0])
        )
    ref_l, ref_c, ref_landm = port_multibox_loss((boxes, logits, points), priors / size, rows)
    # float32 sums over the 3 x 378 priors in other orders (batched here, per image in the
    # port): 2e-7 apart (relative) at most; summing that many terms in any order errs by about
    # sqrt(n) ulps (2e-6), so 3e-5 keeps 10x over that (the loss keeps parts of its
    # arithmetic in float32: float64 inputs would not make both sides exact). A wrong
    # weight or mining ratio is off by tens of percents: box_weight 1 instead of 2 by 50%,
    # 7 negatives per positive instead of 3 by 65%.
    torch.testing.assert_close(ours["loss_box"], 2.0 * ref_l, rtol=3e-5, atol=0)
    torch.testing.assert_close(ours["loss_cls"], ref_c, rtol=3e-5, atol=0)
    torch.testing.assert_close(ours["loss_landmarks"], ref_landm, rtol=3e-5, atol=0)


def test_nms_measures_boxes_as_the_ports_py_cpu_nms():
    """Small boxes, where the port's "+1" pixel widths change the IoU: the post-processing keeps
    exactly the boxes py_cpu_nms keeps (at most max_detections, best first)."""
    from resvision.heads.retinaface import RetinaFaceTestConfig, postprocess

    from .retinaface_reference import py_cpu_nms

    g = torch.Generator().manual_seed(0)
    cfg = RetinaFaceTestConfig(score_threshold=0.02)
    for _ in range(20):
        n = 60
        xy = torch.rand(n, 2, generator=g) * 30
        wh = torch.rand(n, 2, generator=g) * 8 + 1
        priors = torch.cat([xy + wh / 2, wh], 1)  # zero deltas decode to these boxes
        scores = torch.rand(n, generator=g) * 0.9 + 0.05
        logits = torch.stack([torch.zeros(n), torch.log(scores / (1 - scores))], 1)[None]
        boxes, _, _, valid = postprocess(
            logits,
            torch.zeros(1, n, 4),
            torch.zeros(1, n, 10),
            priors,
            priors[:, :2],
            None,
            cfg,
            (0.1, 0.2),
        )
        dets = np.concatenate([torch.cat([xy, xy + wh], 1).numpy(), scores[:, None].numpy()], 1)
        keep = py_cpu_nms(dets.astype(np.float32), cfg.nms_threshold)
        np.testing.assert_allclose(boxes[0][valid[0]].numpy(), dets[keep, :4], atol=1e-5)


def test_loss_gradients_flow_and_an_empty_batch_gives_zero():
    logits, boxes, points, priors, targets, _ = _loss_case(0)
    for t in (logits, boxes, points):
        t.requires_grad_(True)
    losses = multibox_loss(logits, boxes, points, priors, targets, MultiboxLossConfig(), (0.1, 0.2))
    sum(losses.values()).backward()
    assert all(
        torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0 for t in (logits, boxes, points)
    )
    empty = [
        {
            "boxes": torch.zeros(0, 4),
            "landmarks": torch.zeros(0, 5, 2),
            "has_landmarks": torch.zeros(0, dtype=torch.bool),
        }
    ]
    zero = multibox_loss(
        logits[:1], boxes[:1], points[:1], priors, empty, MultiboxLossConfig(), (0.1, 0.2)
    )
    assert all(float(v.detach()) == 0.0 for v in zero.values())


@pytest.mark.parametrize("name", ["resnet18d", "resnext50_32x4d", "iresnet18"])
def test_any_registry_backbone(name):
    """Heads sized from the backbone's specs; iResNets (strides 4/8/16) need their steps."""
    steps = (4, 8, 16) if name.startswith("iresnet") else (8, 16, 32)
    cfg = RetinaFaceConfig(backbone=name, fpn_channels=32)
    cfg.priors.steps = steps
    model = RetinaFace(cfg.create_backbone(cfg.levels), cfg).eval()
    with torch.no_grad():
        (r,) = model([torch.randint(0, 255, (3, 64, 72), dtype=torch.uint8)])
    assert r["boxes"].shape[1:] == (4,) and r["landmarks"].shape[1:] == (5, 2)


def test_steps_that_are_not_the_strides_are_refused():
    cfg = RetinaFaceConfig(backbone="iresnet18", fpn_channels=32)
    with pytest.raises(ValueError, match=r"model.priors.steps=\[4, 8, 16\]"):
        RetinaFace(cfg.create_backbone(cfg.levels), cfg)
