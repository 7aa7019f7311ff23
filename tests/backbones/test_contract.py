"""The feature contract, checked against real outputs for every registered backbone.

For each level: channels equal the declared spec and the spatial size is ceil(input / stride),
at every output stride the family supports. Odd input sizes catch off-by-one padding.
"""

from __future__ import annotations

import math

import pytest
import torch

from resvision.backbones import create_backbone, list_backbones

HEAVY = {"resnet152", "resnet152d", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet101_2"}
HEAVY |= {"iresnet100", "iresnet200", "resnetv2_152"}
# thousand-layer CIFAR nets: checked on a tiny input (odd sizes still), so the sweep stays fast
TINY_INPUT = {"cifar_resnet1202", "cifar_preact_resnet1001"}


def _params() -> list:
    return [
        pytest.param(name, id=name, marks=[pytest.mark.slow] if name in HEAVY else [])
        for name in list_backbones()
    ]


def _all_levels(name: str, **kw) -> tuple[str, ...]:
    with torch.device("meta"):
        return tuple(s.name for s in create_backbone(name, out_levels=("c2",), **kw).family_specs)


def _input_size(name: str, native_stride: int) -> tuple[int, int]:
    if name in TINY_INPUT:
        return (13, 11)
    if native_stride == 16:  # the face models' 112x112 crops
        return (112, 112)
    return (67, 45)  # odd on purpose


@pytest.mark.parametrize("name", _params())
def test_declared_specs_match_outputs(name):
    with torch.device("meta"):
        probe = create_backbone(name, out_levels=("c2",))
    strides = sorted(type(probe).output_strides, reverse=True)  # native first
    size = _input_size(name, probe.output_stride)
    for output_stride in strides:
        levels = _all_levels(name, output_stride=output_stride)
        model = create_backbone(name, out_levels=levels, output_stride=output_stride).eval()
        with torch.no_grad():
            feats = model(torch.randn(1, 3, *size))
        assert list(feats) == [s.name for s in model.feature_specs] == list(levels)
        for spec in model.feature_specs:
            expected = (1, spec.channels, *(math.ceil(s / spec.stride) for s in size))
            assert tuple(feats[spec.name].shape) == expected, (name, output_stride, spec)
            assert spec.stride <= output_stride
        assert model.feature_specs[-1].stride == output_stride
        assert model.size_divisibility == output_stride


def test_default_levels_and_real_strides():
    model = create_backbone("resnet50", output_stride=16)
    assert [(s.name, s.channels, s.stride) for s in model.feature_specs] == [
        ("c2", 256, 4),
        ("c3", 512, 8),
        ("c4", 1024, 16),
        ("c5", 2048, 16),
    ]
    face = create_backbone("iresnet50")
    assert [(s.name, s.stride) for s in face.feature_specs] == [
        ("c2", 2),
        ("c3", 4),
        ("c4", 8),
        ("c5", 16),
    ]
    assert "c1" not in [s.name for s in face.family_specs]  # stride-1 stem: no c1 level


def test_subset_of_levels_drops_later_stages():
    model = create_backbone("resnet18", out_levels=("c1", "c3"))
    feats = model(torch.randn(2, 3, 64, 64))
    assert list(feats) == ["c1", "c3"]
    assert model.layer3 is None and model.layer4 is None  # never run, so not built
    assert model.size_divisibility == 8
    # every parameter gets a gradient: nothing unused for DDP
    sum(f.sum() for f in feats.values()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_runs_with_channels_last_and_autocast():
    model = create_backbone("resnet18d", out_levels=("c1", "c2", "c3", "c4", "c5")).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        out_cl = model_cl(x.to(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_bf16 = model_cl(x.to(memory_format=torch.channels_last))
    for k in ref:
        torch.testing.assert_close(out_cl[k], ref[k], rtol=1e-4, atol=1e-4)
        assert out_bf16[k].dtype == torch.bfloat16
        assert out_bf16[k].shape == ref[k].shape
        rel = (out_bf16[k].float() - ref[k]).norm() / ref[k].norm()
        assert rel < 0.05, (k, rel)


@pytest.mark.slow
def test_torch_compile_matches_eager():
    model = create_backbone("resnet18", out_levels=("c1", "c3")).eval()
    x = torch.randn(1, 3, 64, 64)
    compiled = torch.compile(model)
    with torch.no_grad():
        ref, out = model(x), compiled(x)
    assert list(out) == ["c1", "c3"]
    for k in ref:
        torch.testing.assert_close(out[k], ref[k], rtol=1e-4, atol=1e-4)


def _random_norm_statistics(model, seed):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.normal_(0, 0.1, generator=g)
            m.running_mean.normal_(0, 0.2, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)


def _rel(a, b):  # a relative error over the whole tensor: folding reassociates products
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


def test_folded_norm_cache_follows_loading_buffer_and_weight_changes():
    """The folded scale, bias and frozen weights kept between calls are remade whenever a
    tensor they come from changes: loaded weights, an edited buffer, an optimizer-style in-place
    step on a trainable and on a frozen convolution, a call in another dtype.

    Folded and unfolded float32 runs differ by rounding alone (1e-6 relative here, more with
    other CPUs' kernels); a stale fold is off by 0.13 at least (the smallest change below, one
    norm's variance), so the bound sits between the two."""
    torch.manual_seed(0)
    ref = create_backbone("resnet18", out_levels=["c5"]).eval()
    _random_norm_statistics(ref, seed=1)
    ours = create_backbone(
        "resnet18", out_levels=["c5"], weights=ref.state_dict(), norm="frozen_bn", frozen_stages=2
    ).train()
    x = torch.randn(1, 3, 64, 64)

    def check():
        with torch.no_grad():
            expected = ref(x)["c5"]
        for grad in (False, True):  # the no-gradient call caches folded weights too
            with torch.set_grad_enabled(grad):
                assert _rel(ours(x)["c5"], expected) < 1e-3

    check()
    _random_norm_statistics(ref, seed=2)
    ours.load_state_dict(
        {k: v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    )
    check()
    with torch.no_grad():
        ref.layer3[0].bn1.running_var.mul_(1.7)
        ours.layer3[0].bn1.running_var.mul_(1.7)
        for conv in ("conv1", "layer1.0.conv1", "layer4.1.conv2"):  # frozen, frozen, trainable
            noise = torch.randn_like(ref.get_submodule(conv).weight) * 0.05
            ref.get_submodule(conv).weight.add_(noise)
            ours.get_submodule(conv).weight.add_(noise)
    check()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ours(x)["c5"].dtype == torch.bfloat16
    check()


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet50d", "iresnet18"])
def test_frozen_bn_folded_into_convolutions_equals_eval_mode_batch_norm(name):
    """``frozen_bn`` runs each conv + frozen norm as one convolution: same features, same
    gradients and the same state_dict as the unfolded network (eval-mode BatchNorm).

    The folding is an identity of the algebra, so both sides run in float64, where rounding
    stays near 1e-15 through the whole network (in float32, reassociated products and the
    reductions of the weight gradients drift by 1e-6 to 4e-4 depending on the CPU's kernels).
    Catches a wrong fold (run once each): the scale applied twice or the norm's bias dropped
    put the features off by 0.4 to 2 (relative), and gradients doubled behind an unchanged
    forward put them off by 1."""
    torch.manual_seed(0)
    ref = create_backbone(name, out_levels=["c2", "c3", "c4", "c5"])
    _random_norm_statistics(ref, seed=1)
    ours = create_backbone(name, weights=ref.state_dict(), norm="frozen_bn")
    ref.eval().double(), ours.train().double()
    folded = [m for m in ours.modules() if type(m).__name__ == "_FoldedConv2d"]
    convs = [m for m in ours.modules() if isinstance(m, torch.nn.Conv2d)]
    if name.startswith("iresnet"):  # pre-activation blocks (norm before conv): left alone
        assert not folded
        return
    assert len(folded) == len(convs)  # every convolution of a ResNet is followed by a norm
    x = torch.randn(2, 3, 96, 128, dtype=torch.float64)
    out_ref, out = ref(x), ours(x)
    sum(v.square().mean() for v in out_ref.values()).backward()
    sum(v.square().mean() for v in out.values()).backward()

    for level in out_ref:
        assert _rel(out[level], out_ref[level]) < 1e-10, level
    grads = dict(ref.named_parameters())
    for key, p in ours.named_parameters():
        assert _rel(p.grad, grads[key].grad) < 1e-10, key
    assert set(ours.state_dict()) == {
        k for k in ref.state_dict() if not k.endswith("num_batches_tracked")
    }


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in list_backbones()])
def test_level_prefixes_cover_the_state_dict(name):
    """Every key of the full trunk belongs to exactly one level (what loading a checkpoint into a
    trunk cut after an earlier level skips), and cutting a level drops exactly its keys."""
    with torch.device("meta"):
        levels = _all_levels(name)
        full = create_backbone(name, out_levels=levels)
        prefixes = full.level_prefixes()
        assert set(prefixes) == set(levels), (name, sorted(prefixes))
        owners = {
            k: [lv for lv, ps in prefixes.items() if k.startswith(ps)] for k in full.state_dict()
        }
        assert all(len(v) == 1 for v in owners.values()), {
            k: v for k, v in owners.items() if len(v) != 1
        }
        cut = create_backbone(name, out_levels=levels[:-1])
        dropped = {k for k, v in owners.items() if v == [levels[-1]]}
        assert set(cut.state_dict()) == set(full.state_dict()) - dropped
        assert all(k.startswith(cut.ignored_keys()) for k in dropped)
