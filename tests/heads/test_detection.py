"""heads/detection: the parts of Faster R-CNN that are tested apart from the whole model."""

from __future__ import annotations

import torch


def test_sync_free_sampler_follows_torchvision_counts():
    from resvision.heads.detection.box_ops import sample_balanced as _sample

    g = torch.Generator().manual_seed(0)
    fg = torch.rand(4, 1000, generator=g) < torch.tensor([[0.001], [0.05], [0.3], [0.0]])
    bg = ~fg & (torch.rand(4, 1000, generator=g) < torch.tensor([[0.9], [0.9], [0.1], [0.0]]))
    pos, neg = _sample(fg, bg, 256, 0.5)
    assert not (pos & ~fg).any() and not (neg & ~bg).any()
    assert torch.equal(pos.sum(1), fg.sum(1).clamp(max=128))
    assert torch.equal(neg.sum(1), torch.minimum(bg.sum(1), 256 - pos.sum(1)))
    again, _ = _sample(fg, bg, 256, 0.5)
    assert not torch.equal(pos, again)  # a random subset, not the first entries
