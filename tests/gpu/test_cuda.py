"""GPU correctness: the CUDA paths agree with the CPU ones and every task trains, checkpoints and
resumes under fp16 (gradient scaler) and bf16 autocast with channels_last. Skipped without CUDA
(CI has none); run on a GPU machine with ``pytest tests/gpu``."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from resvision.backbones import create_backbone
from resvision.heads.margin import ARCFACE, CombinedMarginLoss, PartialFC
from resvision.heads.nms import group_nms
from resvision.tasks.engine.checkpoint import load_checkpoint
from resvision.tasks.engine.config import apply_overrides
from resvision.tasks.engine.loop import train
from resvision.tasks.segmentation.evaluation import ConfusionMatrix

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def _exact_fp32():
    """TF32 off: the fp32 comparisons below are against the CPU's full-precision results."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12))


@pytest.mark.parametrize(
    "name", ["resnet50", "resnext50_32x4d", "wide_resnet50_2", "resnet50d", "iresnet50"]
)
def test_backbone_features_on_cuda_match_cpu_and_bf16_stays_close(name):
    model = create_backbone(name).eval()
    x = torch.randn(2, 3, 112, 144)
    with torch.no_grad():
        cpu = model(x)
        model = model.cuda()
        gpu = model(x.cuda())
        model = model.to(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = model(x.cuda().contiguous(memory_format=torch.channels_last))
    assert list(gpu) == list(cpu) == list(half)
    for level in cpu:
        assert gpu[level].shape == cpu[level].shape == half[level].shape
        assert _relative_error(gpu[level].cpu(), cpu[level]) < 1e-4, level
        assert _relative_error(half[level], gpu[level]) < 0.05, level


def test_confusion_matrix_on_cuda_equals_cpu():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 21, (4, 97, 131), generator=g)
    target[:, :5] = 255
    pred = torch.randint(0, 21, (4, 97, 131), generator=g)
    cpu, gpu = ConfusionMatrix(21), ConfusionMatrix(21, device="cuda")
    cpu.update(pred, target)
    gpu.update(pred.cuda(), target.cuda())
    assert gpu.matrix.device.type == "cuda"
    assert torch.equal(gpu.matrix.cpu(), cpu.matrix)
    assert cpu.compute()["mIoU"] == gpu.compute()["mIoU"]


@pytest.mark.parametrize("edges_per_box", [64, 0], ids=["sparse", "dense"])
def test_batched_group_nms_on_cuda_equals_torchvision_nms(edges_per_box, monkeypatch):
    from torchvision.ops import nms

    monkeypatch.setattr("resvision.heads.nms._SPARSE_EDGES_PER_BOX", edges_per_box)
    g = torch.Generator().manual_seed(0)
    groups, k = 8, 1000  # RPN-sized rows
    xy = torch.rand(groups, k, 2, generator=g) * 600
    wh = torch.rand(groups, k, 2, generator=g) * 120 + 1
    boxes = torch.cat([xy, xy + wh], -1).cuda()
    scores = torch.rand(groups, k, generator=g).cuda()
    valid = (torch.rand(groups, k, generator=g) > 0.2).cuda()
    for threshold in (0.5, 0.7):
        keep = group_nms(boxes, scores, valid, threshold)
        assert keep.device.type == "cuda"
        for row in range(groups):
            idx = valid[row].nonzero().squeeze(1)
            expected = set(idx[nms(boxes[row, idx], scores[row, idx], threshold)].tolist())
            assert set(keep[row].nonzero().squeeze(1).tolist()) == expected


def test_torchvision_fasterrcnn_state_dict_gives_the_same_detections_on_cuda(tmp_path):
    from resvision.tasks.detection import DetectionTask
    from resvision.tasks.detection.config import PRESETS

    from ..tasks.detection.test_compat import _randomized, assert_same_as_torchvision

    torch.backends.cudnn.deterministic = True
    ref = _randomized(False)
    torch.save(ref.state_dict(), tmp_path / "tv.pth")
    overrides = [
        f"model.weights={tmp_path / 'tv.pth'}",
        "model.test.min_size=256",
        "model.test.max_size=384",
        "model.norm=bn",
        "model.roi_heads.detections_per_img=1000",
    ]
    cfg = apply_overrides(PRESETS["fasterrcnn_resnet50_fpn_torchvision"](), overrides)
    ours = DetectionTask().build_model(cfg).eval().cuda()
    ref = ref.cuda()
    g = torch.Generator().manual_seed(2)
    images = [
        (torch.rand(3, 240, 320, generator=g) * 255).round().cuda(),
        (torch.rand(3, 301, 257, generator=g) * 255).round().cuda(),
    ]
    assert_same_as_torchvision(ref, ours, images)


def test_torchvision_maskrcnn_state_dict_gives_the_same_masks_on_cuda(voc_sample, tmp_path):
    """test_mask_compat's parity on the GPU: torchvision's Mask R-CNN and ours, both on CUDA,
    on two real photos of different sizes in one batch, with both NMS implementations."""
    import numpy as np
    from PIL import Image

    from ..tasks.detection.test_compat import assert_same_as_torchvision
    from ..tasks.detection.test_mask_compat import (
        MASK_TOL,
        _compare_masks,
        _ours,
        _randomized_maskrcnn,
    )

    torch.backends.cudnn.deterministic = True
    ref = _randomized_maskrcnn(False, detections=30)
    torch.save(ref.state_dict(), tmp_path / "tv.pth")
    ours = _ours(
        "maskrcnn_resnet50_fpn_torchvision",
        [
            f"model.weights={tmp_path / 'tv.pth'}",
            "model.test.min_size=224",
            "model.test.max_size=320",
            "model.norm=bn",
            "model.roi_heads.detections_per_img=30",
        ],
    ).cuda()
    images = [
        torch.from_numpy(np.array(Image.open(voc_sample / "JPEGImages" / name)))
        .permute(2, 0, 1)
        .float()
        .cuda()
        for name in ("2011_000003.jpg", "2011_000025.jpg")
    ]
    stats = {"worst": 0.0, "compared": 0, "shifted": 0, "foreground": 0}
    assert_same_as_torchvision(ref.cuda(), ours, images, compare=_compare_masks(stats))
    assert stats["compared"] >= 100 and stats["worst"] <= MASK_TOL, stats


def test_partial_fc_on_cuda_with_sample_rate_one_is_the_full_softmax():
    torch.manual_seed(0)
    margin = CombinedMarginLoss(64.0, **ARCFACE)
    pfc = PartialFC(margin, 64, 5000, sample_rate=1.0).cuda()
    emb = torch.randn(32, 64, device="cuda", requires_grad=True)
    labels = torch.randint(0, 5000, (32,), device="cuda")
    expected = F.cross_entropy(
        margin(F.linear(F.normalize(emb), F.normalize(pfc.weight)), labels), labels
    )
    torch.testing.assert_close(pfc(emb, labels), expected)
    sampled = PartialFC(margin, 64, 50_000, sample_rate=0.1).cuda()
    value = sampled(emb, labels)
    value.backward()
    rows = sampled.weight.grad.abs().sum(1) > 0
    assert torch.isfinite(value) and rows[labels].all() and int(rows.sum()) <= 5000


def _task_and_preset(task: str):
    if task == "segmentation":
        from resvision.tasks.segmentation.config import PRESETS
        from resvision.tasks.segmentation.task import SegmentationTask

        return (
            SegmentationTask(),
            PRESETS["unet_r18_synthetic"](),
            [
                "data.synthetic_train=16",
                "data.synthetic_val=4",
                "data.synthetic_size=64",
                "data.crop_size=[64,64]",
                "data.batch_size=4",
            ],
        )
    if task in ("detection", "instance-segmentation"):
        from resvision.tasks.detection import DetectionTask
        from resvision.tasks.detection.config import PRESETS

        name = "faster" if task == "detection" else "mask"
        return (
            DetectionTask(),
            PRESETS[f"{name}_rcnn_r18_fpn_synthetic"](),
            ["data.synthetic_train=16", "data.synthetic_val=4"],
        )
    from resvision.tasks.face import FaceTask
    from resvision.tasks.face.config import PRESETS

    return (
        FaceTask(),
        PRESETS["iresnet18_synthetic"](),
        [
            "data.synthetic_identities=20",
            "data.synthetic_images=4",
            "data.synthetic_val_identities=10",
            "data.synthetic_val_pairs=40",
        ],
    )


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
@pytest.mark.parametrize("task", ["segmentation", "detection", "instance-segmentation", "face"])
def test_each_task_trains_checkpoints_and_resumes_on_cuda(task, amp, tmp_path):
    """A few steps on the GPU under autocast + channels_last: finite losses, no skipped steps,
    a checkpoint whose scaler state comes back on resume, and evaluation metrics at the end."""
    t, preset, data = _task_and_preset(task)
    common = [
        *data,
        "runtime.device=cuda",
        f"runtime.amp={amp}",
        "runtime.channels_last=true",
        "runtime.tensorboard=false",
        "runtime.progress=false",
        "runtime.eval_period=6",
        "runtime.checkpoint_period=3",
        "schedule.warmup_iterations=2",
    ]
    cfg = apply_overrides(
        preset, [*common, f"runtime.output_dir={tmp_path}", "schedule.iterations=3"]
    )
    first = train(t, cfg)
    assert first.iteration == 3 and first.skipped_steps == 0
    state = load_checkpoint(tmp_path / "last.pt")
    if amp == "fp16":
        assert state.get("scaler"), "the fp16 gradient scaler state is checkpointed"
    cfg = apply_overrides(
        _task_and_preset(task)[1],
        [*common, f"runtime.output_dir={tmp_path}", "schedule.iterations=6"],
    )
    second = train(t, cfg, resume=tmp_path / "last.pt")
    assert second.iteration == 6 and second.skipped_steps == 0
    assert second.metrics and all(math.isfinite(v) for v in second.metrics.values())
