"""GPU checks of face detection: CUDA detections equal the CPU's, the multibox loss and a
training step make no host synchronisation, fp16 training runs. Skipped without CUDA (this
task's machine had none: not yet run on a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resvision.datasets.face_detection import SyntheticFaceScenes
from resvision.heads.retinaface import RetinaFace, RetinaFaceConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def _exact_fp32():
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _model():
    torch.manual_seed(0)
    cfg = RetinaFaceConfig(backbone="resnet18", fpn_channels=64)
    model = RetinaFace(cfg.create_backbone(cfg.levels), cfg).eval()
    with torch.no_grad():
        for head in model.class_head:
            head.bias.copy_(torch.tensor([2.5, -2.5] * 2))
    return model


def _batch(device, side: int | None = None):
    """Synthetic scenes of mixed sizes, or all ``side`` x ``side``, with their faces."""
    scenes = SyntheticFaceScenes(seed=3, min_side=side or 96, max_side=side or 160)
    images, targets = [], []
    for i in range(4):
        s = scenes.scene(i)
        images.append(torch.from_numpy(s.image.transpose(2, 0, 1).copy()).to(device))
        targets.append(
            {
                "boxes": torch.from_numpy(s.boxes).to(device),
                "landmarks": torch.from_numpy(s.landmarks).to(device),
                "has_landmarks": torch.ones(len(s.boxes), dtype=torch.bool, device=device),
            }
        )
    return images, targets


def test_detections_on_cuda_equal_cpu():
    model = _model()
    images, _ = _batch("cpu")
    with torch.no_grad():
        cpu = model(images)
        gpu = model.cuda()([img.cuda() for img in images])
    for a, b in zip(cpu, gpu):
        assert len(a["scores"]) == len(b["scores"])
        np.testing.assert_allclose(b["boxes"].cpu(), a["boxes"], atol=1e-2)
        np.testing.assert_allclose(b["landmarks"].cpu(), a["landmarks"], atol=1e-2)


def test_a_training_step_makes_no_host_sync():
    model = _model().cuda().train()
    images, targets = _batch("cuda", 128)
    x = torch.stack(images)
    model(x, targets)  # priors and normalization constants are made once, then cached
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = model(x, targets)
        sum(losses.values()).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(v) for v in losses.values())


def test_fp16_training_loss_is_finite_and_close():
    model = _model().cuda().train()
    images, targets = _batch("cuda", 128)
    x = torch.stack(images)
    full = model(x, targets)
    with torch.autocast("cuda", dtype=torch.float16):
        half = model(x, targets)
    for k in full:
        assert torch.isfinite(half[k])
        assert abs(float(half[k]) - float(full[k])) < 0.05 * float(full[k]) + 0.05, k
