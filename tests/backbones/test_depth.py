"""The depth options on every family: zero-initialised residual branches, stochastic depth and
activation checkpointing (gradients and batch-norm statistics identical with and without it)."""

from __future__ import annotations

import pytest
import timm.models.resnet as timm_resnet
import timm.models.resnetv2 as timm_resnetv2
import torch
import torch.nn.functional as F
from torch import nn

from resvision.backbones import BackboneConfig, create_backbone
from resvision.backbones.cifar import CifarBasicBlock, CifarPreActBottleneck
from resvision.backbones.depth import CheckpointedBlocks
from resvision.backbones.iresnet import IBasicBlock

# one name per block type: timm basic / bottleneck, iResNet, pre-activation (BN and GN), CIFAR
FAMILIES = [
    "resnet18",
    "resnet50",
    "iresnet18",
    "resnetv2_50",
    "resnetv2_50x1_bit",
    "cifar_resnet20",
    "cifar_preact_resnet164",
]


def _shortcut(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What a block returns when its residual branch is zero: its shortcut (after the final
    ReLU for the post-activation blocks)."""
    if isinstance(block, timm_resnet.BasicBlock | timm_resnet.Bottleneck):
        return F.relu(x if block.downsample is None else block.downsample(x))
    if isinstance(block, IBasicBlock):
        return x if block.downsample is None else block.downsample(x)
    if isinstance(block, timm_resnetv2.PreActBottleneck):
        return x if block.downsample is None else block.downsample(block.norm1(x))
    if isinstance(block, CifarBasicBlock):
        return F.relu(x if block.shortcut is None else block.shortcut(x))
    if isinstance(block, CifarPreActBottleneck):
        return x if block.shortcut is None else block.shortcut(F.relu(block.bn1(x)))
    raise AssertionError(type(block))


def _block_io(model, x) -> list[tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    seen = []
    hooks = [
        b.register_forward_hook(lambda m, args, out: seen.append((m, args[0], out)))
        for b in model.residual_blocks()
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def _levels(name):
    with torch.device("meta"):
        return [s.name for s in create_backbone(name, out_levels=("c2",)).family_specs]


@pytest.mark.parametrize("name", FAMILIES)
def test_zero_init_residual_every_block_starts_as_its_shortcut(name):
    x = torch.randn(2, 3, 32, 32)
    model = create_backbone(name, out_levels=_levels(name)[-1:], zero_init_residual=True)
    seen = _block_io(model.train(), x)
    assert len(seen) == len(model.residual_blocks()) > 0
    with torch.no_grad():  # exact: the zero branch adds exactly 0 to the same shortcut modules'
        for block, inp, out in seen:  # output for the same input
            assert torch.equal(out, _shortcut(block, inp)), type(block).__name__
    # and without it, the branches are not zero: the check above can fail
    other = create_backbone(name, out_levels=_levels(name)[-1:], zero_init_residual=False)
    with torch.no_grad():
        assert any(not torch.equal(o, _shortcut(b, i)) for b, i, o in _block_io(other, x))


def test_zero_init_residual_defaults_and_loaded_weights_overwrite_it():
    assert create_backbone("iresnet18").layer2[1].bn3.weight.abs().sum() == 0  # on by default
    ref = create_backbone("resnet18", zero_init_residual=False)
    assert ref.layer2[1].bn2.weight.abs().sum() > 0
    loaded = create_backbone("resnet18", weights=ref.state_dict(), zero_init_residual=True)
    for key, value in ref.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    plain = create_backbone("cifar_resnet20", plain=True)  # default: off for plain nets
    assert plain.layer1[0].bn2.weight.abs().min() > 0
    with pytest.raises(ValueError, match="zero_init_residual=False"):
        create_backbone("cifar_resnet20", plain=True, zero_init_residual=True)
    # the config default follows create_backbone's
    assert BackboneConfig("cifar_resnet20").create_backbone(None).layer1[0].bn2.weight.sum() == 0


@pytest.mark.parametrize("name", ["resnet18", "iresnet18", "resnetv2_50", "cifar_resnet20"])
def test_drop_path_rises_linearly_is_seeded_and_off_in_eval(name):
    kw = {"out_levels": _levels(name)[-1:], "drop_path_rate": 0.5}
    model = create_backbone(name, **kw)
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in model.residual_blocks()]
    n = len(rates)
    assert rates == pytest.approx([0.5 * i / (n - 1) for i in range(n)])
    reference = create_backbone(name, out_levels=kw["out_levels"], zero_init_residual=False)
    model.load_state_dict(reference.state_dict())
    x = torch.randn(4, 3, 32, 32)
    level = kw["out_levels"][0]
    with torch.no_grad():  # exact: in eval both run the same layers with the same weights
        assert torch.equal(model.eval()(x)[level], reference.eval()(x)[level])  # off in eval
        model.train(), reference.train()
        torch.manual_seed(1)
        first = model(x)[level]
        torch.manual_seed(1)
        again = model(x)[level]
        assert torch.equal(first, again)  # the masks come from the seeded global generator
        assert not torch.equal(first, reference(x)[level])  # and they do drop in training


def test_drop_path_errors():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        create_backbone("resnet18", drop_path_rate=1.0)
    with pytest.raises(ValueError, match="needs shortcuts"):
        create_backbone("cifar_resnet20", plain=True, drop_path_rate=0.1)


# -- activation checkpointing ---------------------------------------------------------------
def _step(model, x, *, compiled=None):
    """One training forward/backward; gradients, running statistics and forward counts."""
    calls = {}
    hooks = [
        b.register_forward_pre_hook(lambda m, a: calls.__setitem__(id(m), calls.get(id(m), 0) + 1))
        for b in model.residual_blocks()
    ]
    run = model if compiled is None else compiled
    feats = run(x)
    sum(f.float().square().mean() for f in feats.values()).backward()
    for h in hooks:
        h.remove()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return grads, {k: v.clone() for k, v in model.state_dict().items()}, calls


CASES = {
    "bn, stem frozen, all stages": ("resnet18", dict(frozen_stages=1), True),
    "frozen_bn folded, 2 frozen, channels_last": (
        "resnet50",
        dict(norm="frozen_bn", frozen_stages=2, channels_last=True),
        ("c3", "c5"),
    ),
    "eval_bn": ("resnet18", dict(norm="eval_bn"), ("c2", "c4")),
    "iresnet prelu": ("iresnet18", {}, ("c3", "c5")),
    "pre-activation bn-act": ("resnetv2_50", {}, True),
    "groupnorm stdconv": ("resnetv2_50x1_bit", dict(frozen_stages=3), True),
    "cifar with stochastic depth": ("cifar_resnet20", dict(drop_path_rate=0.3), True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_checkpointing_gives_identical_gradients_and_running_stats(case):
    name, options, stages = CASES[case]
    options = dict(options)
    channels_last = options.pop("channels_last", False)
    torch.manual_seed(0)
    plain = create_backbone(name, out_levels=_levels(name)[1:], **options)
    cp = create_backbone(
        name,
        out_levels=_levels(name)[1:],
        weights=plain.state_dict(),
        activation_checkpointing=stages,
        **options,
    )
    x = torch.randn(2, 3, 64, 48)
    if channels_last:
        plain, cp = (m.to(memory_format=torch.channels_last) for m in (plain, cp))
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)  # the input gradient must match too
    torch.manual_seed(5)
    g_ref, s_ref, calls_ref = _step(plain.train(), x)
    x_grad = x.grad.clone()
    x.grad = None
    torch.manual_seed(5)
    g_cp, s_cp, calls_cp = _step(cp.train(), x)
    assert g_ref.keys() == g_cp.keys() and g_ref
    # exact: the recomputation replays the same operations on the same shapes, and the backward
    # pass runs the same kernels in the same order
    for key in g_ref:
        assert torch.equal(g_ref[key], g_cp[key]), key
    assert torch.equal(x_grad, x.grad)
    for key in s_ref:  # running means, variances and num_batches_tracked updated exactly once
        assert torch.equal(s_ref[key], s_cp[key]), key
    # the checkpointed blocks did run twice (forward, recomputation), the others once
    expected = stages if stages is not True else cp.checkpointed_stages
    assert cp.checkpointed_stages == tuple(expected)
    for level, blocks in cp.stage_blocks().items():
        runs = 2 if level in expected else 1
        assert isinstance(blocks, CheckpointedBlocks) == (level in expected)
        assert {calls_cp[id(b)] for b in blocks} <= {runs}, level
    assert set(calls_ref.values()) == {1}


def test_checkpointing_true_skips_frozen_stages_and_eval_runs_plainly():
    model = create_backbone("resnet18", frozen_stages=3, activation_checkpointing=True)
    assert model.checkpointed_stages == ("c4", "c5")
    with torch.no_grad():  # no graph: the blocks run once, nothing is checkpointed
        count = []
        h = model.layer4[0].register_forward_pre_hook(lambda *a: count.append(1))
        model.eval()(torch.randn(1, 3, 32, 32))
        h.remove()
    assert count == [1]
    # switched off again: plain Sequentials, keys unchanged
    keys = list(model.state_dict())
    model.set_activation_checkpointing(False)
    assert type(model.layer4) is nn.Sequential and list(model.state_dict()) == keys


def test_checkpointing_refuses_what_cannot_apply():
    with pytest.raises(ValueError, match=r"'c7'.*\['c2', 'c3', 'c4', 'c5'\]"):
        create_backbone("resnet18", activation_checkpointing=["c7"])
    with pytest.raises(ValueError, match="'c1'.*not a stage with residual blocks"):
        create_backbone("resnet18", activation_checkpointing=["c1"])
    with pytest.raises(ValueError, match="'c5'.*not built.*out_levels"):
        create_backbone("resnet18", out_levels=["c2", "c3"], activation_checkpointing=["c5"])
    with pytest.raises(ValueError, match="'c2'.*frozen.*frozen_stages=2"):
        create_backbone("resnet18", frozen_stages=2, activation_checkpointing=["c2", "c3"])
    with pytest.raises(ValueError, match="list of stage names"):
        create_backbone("resnet18", activation_checkpointing="c4")
    with pytest.raises(ValueError, match=r"\['c2', 'c3', 'c4'\]"):
        create_backbone("cifar_resnet20", activation_checkpointing=["c5"])


def test_checkpointing_under_autocast_keeps_dtype_and_gradients_close():
    torch.manual_seed(0)
    ref = create_backbone("resnet18", out_levels=["c3"])
    cp = create_backbone(
        "resnet18", out_levels=["c3"], weights=ref.state_dict(), activation_checkpointing=True
    )
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for model in (ref, cp):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)["c3"]
        assert out.dtype == torch.bfloat16
        out.float().square().mean().backward()
        grads.append(model.layer2[0].conv1.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference relative to the largest value of ``b``."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


@pytest.mark.slow
def test_checkpointing_under_torch_compile_matches_eager():
    """Compiled: the same gradients and running statistics as eager without checkpointing.

    Inductor fuses and reorders the float32 arithmetic: every gradient and statistic is within
    1.1e-6 of its tensor's largest value (measured), so the bound keeps about 100x of headroom
    for other CPUs' kernels. The statistics updated twice by a block (run once more before its
    checkpoint) put running means off by 0.9 (relative); a gradient cut (a block's input
    detached) zeroes the gradients before it."""
    torch.manual_seed(0)
    ref = create_backbone("cifar_resnet20", out_levels=["c4"])
    cp = create_backbone(
        "cifar_resnet20",
        out_levels=["c4"],
        weights=ref.state_dict(),
        activation_checkpointing=True,
    )
    x = torch.randn(4, 3, 16, 16)
    g_ref, s_ref, _ = _step(ref.train(), x)
    g_cp, s_cp, _ = _step(cp.train(), x, compiled=torch.compile(cp))
    for key in g_ref:
        assert _relative(g_cp[key], g_ref[key]) < 1e-4, (key, _relative(g_cp[key], g_ref[key]))
    for key in s_ref:  # num_batches_tracked included: integer, compared exactly
        if not s_ref[key].is_floating_point():
            assert torch.equal(s_cp[key], s_ref[key]), key
            continue
        assert _relative(s_cp[key], s_ref[key]) < 1e-4, (key, _relative(s_cp[key], s_ref[key]))
