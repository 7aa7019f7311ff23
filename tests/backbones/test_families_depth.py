"""The pre-activation family (timm's ResNetV2 and BiT) and the CIFAR ResNets of He et al."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.layers.norm_act import BatchNormAct2d, FrozenBatchNormAct2d, SyncBatchNormAct
from torch import nn

from resvision.backbones import create_backbone
from resvision.backbones.cifar import OptionAShortcut

from .test_weights import _randomize_bn


# -- pre-activation ResNets -------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["resnetv2_50", "resnetv2_50x1_bit"])
def test_timm_state_dict_loads_unchanged_and_c5_is_forward_features(arch, tmp_path):
    """A timm-created model's state_dict (the layout of ``timm:goog_in21k``) loads with no
    renaming: only the classifier is dropped, and c5 (with the final norm) equals timm's."""
    ref = timm.create_model(arch, pretrained=False).eval()
    _randomize_bn(ref)
    ours = create_backbone(arch, weights=ref.state_dict(), out_levels=["c1", "c2", "c5"]).eval()
    report = ours.load_report
    assert not report.missing and not report.unexpected
    assert set(report.dropped) == {"head.fc.weight", "head.fc.bias"}
    assert set(ours.state_dict()) == {k for k in ref.state_dict() if not k.startswith("head.")}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # exact: ours runs timm's own modules in timm's order
        feats = ours(x)
        assert torch.equal(feats["c5"], ref.forward_features(x))
        assert torch.equal(feats["c1"], ref.stem.conv(x))
        assert torch.equal(feats["c2"], ref.stages[0](ref.stem(x)))


def test_preact_levels_and_dropped_final_norm():
    model = create_backbone("resnetv2_50", out_levels=["c2", "c3", "c4"])
    assert model.norm is None and not hasattr(model.stages, "3")
    assert [(s.name, s.channels, s.stride) for s in model.family_specs] == [
        ("c1", 64, 2),
        ("c2", 256, 4),
        ("c3", 512, 8),
        ("c4", 1024, 16),
        ("c5", 2048, 32),
    ]
    full = timm.create_model("resnetv2_50", pretrained=False).state_dict()
    loaded = create_backbone("resnetv2_50", weights=full, out_levels=["c2", "c3", "c4"])
    dropped = {
        k.split(".")[0] + ("." + k.split(".")[1] if k.startswith("stages") else "")
        for k in loaded.load_report.dropped
    }
    assert dropped == {"head", "stages.3", "norm"}


def test_preact_batch_norm_policies_keep_the_fused_relu():
    ref = create_backbone("resnetv2_50", out_levels=["c5"]).eval()
    _randomize_bn(ref)
    frozen = create_backbone(
        "resnetv2_50", out_levels=["c5"], weights=ref.state_dict(), norm="frozen_bn"
    )
    norms = [m for m in frozen.modules() if isinstance(m, nn.BatchNorm2d | FrozenBatchNormAct2d)]
    assert norms and all(isinstance(m, FrozenBatchNormAct2d) for m in norms)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        got, expected = frozen.train()(x)["c5"], ref(x)["c5"]
    # frozen (x * scale + shift) and eval-mode norms round differently: 7e-7 of c5's largest
    # value apart (measured with 1 and 2 threads, channels_last and ATen's native
    # convolutions); a lost ReLU (the norms' act made an identity) puts c5 off by 3
    error = float((got - expected).abs().max() / expected.abs().max())
    assert error < 1e-4, error
    sync = create_backbone("resnetv2_50", out_levels=["c3"], norm="sync_bn")
    acts = [m for m in sync.modules() if isinstance(m, nn.SyncBatchNorm)]
    assert acts and all(isinstance(m, SyncBatchNormAct) for m in acts)
    eval_bn = create_backbone("resnetv2_50", out_levels=["c3"], norm="eval_bn").train()
    assert all(not m.training for m in eval_bn.modules() if isinstance(m, BatchNormAct2d))


@pytest.mark.parametrize("norm", ["frozen_bn", "eval_bn", "sync_bn"])
def test_bit_group_norm_refuses_batch_norm_policies(norm):
    with pytest.raises(ValueError, match="GroupNorm.*norm='bn'"):
        create_backbone("resnetv2_50x1_bit", out_levels=["c2"], norm=norm)


def test_preact_frozen_stages_are_bit_identical_after_training():
    model = create_backbone("resnetv2_50", out_levels=["c3"], frozen_stages=2).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randn(2, 3, 64, 64))["c3"].square().mean().backward()
    opt.step()
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(k.startswith("stages.1.") for k in changed)


# -- CIFAR ResNets ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, millions",
    [
        ("cifar_resnet20", 0.27),
        ("cifar_resnet56", 0.85),
        ("cifar_resnet110", 1.7),
        ("cifar_resnet1202", 19.4),
        ("cifar_preact_resnet164", 1.7),
        ("cifar_preact_resnet1001", 10.2),
    ],
)
def test_cifar_parameter_counts_are_the_papers(name, millions):
    """He et al. 2015 table 6 and 2016 table 2 (classifier included in their counts)."""
    with torch.device("meta"):
        model = create_backbone(name, out_levels=["c4"])
    params = sum(p.numel() for p in model.parameters()) + 10 * model.feature_specs[-1].channels
    assert params / 1e6 == pytest.approx(millions, rel=0.03)


def test_cifar_levels_and_option_a_shortcut():
    model = create_backbone("cifar_resnet20")
    assert [(s.name, s.channels, s.stride) for s in model.feature_specs] == [
        ("c2", 16, 1),
        ("c3", 32, 2),
        ("c4", 64, 4),
    ]
    shortcut = model.layer2[0].shortcut
    assert isinstance(shortcut, OptionAShortcut) and not list(shortcut.parameters())
    x = torch.randn(2, 16, 7, 5)
    out = shortcut(x)
    assert out.shape == (2, 32, 4, 3)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])  # the identity, subsampled ...
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0  # ... and zero-padded


@pytest.mark.parametrize("name", ["cifar_resnet20", "cifar_preact_resnet164"])
def test_plain_removes_every_shortcut_and_nothing_else(name):
    """The plain net equals the residual net whose every shortcut returns zero, with the same
    weights: the same layers, no shortcut."""
    residual = create_backbone(name, zero_init_residual=False)
    plain = create_backbone(name, plain=True)
    sd = residual.state_dict()
    shortcut_keys = {k for k in sd if ".shortcut." in k}
    assert set(plain.state_dict()) == set(sd) - shortcut_keys
    if name == "cifar_resnet20":
        assert not shortcut_keys  # option A: a plain net has the very same parameters
    plain.load_state_dict({k: v for k, v in sd.items() if k not in shortcut_keys})
    for block in residual.residual_blocks():  # identity shortcuts (None) become zero too
        block.shortcut = ZeroShortcut()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = residual.eval()(x), plain.eval()(x)
    for level in a:  # exact: the same layers on the same shapes, and branch + 0 is the branch
        assert torch.equal(a[level], b[level]), level
    with torch.no_grad():
        fresh = create_backbone(name, zero_init_residual=False)
        fresh.load_state_dict(sd)
        assert not torch.equal(fresh.eval()(x)["c4"], b["c4"])  # the shortcuts did matter


class ZeroShortcut(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(())


def test_plain_is_refused_for_families_without_it():
    with pytest.raises(
        ValueError, match="plain=True is not available for resnet50.*cifar_resnet20"
    ):
        create_backbone("resnet50", plain=True)


@pytest.mark.parametrize("name", ["cifar_resnet20", "cifar_preact_resnet164"])
def test_cifar_frozen_bn_folds_and_equals_eval_mode(name):
    """The fold is an identity of the algebra, so both sides run in float64: 7e-15 apart at
    most (relative error of the whole tensor), where float32 drifts by 2e-6 and more with
    other CPUs' kernels. The norm's bias dropped from the fold puts the features off by 0.27
    (cifar_resnet20) and 0.34."""
    torch.manual_seed(0)
    ref = create_backbone(name, zero_init_residual=False).eval()
    _randomize_bn(ref)
    ours = create_backbone(name, weights=ref.state_dict(), norm="frozen_bn").train()
    assert any(type(m).__name__ == "_FoldedConv2d" for m in ours.modules())
    ref.double(), ours.double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        out = ours(x)
        for level, value in ref(x).items():
            error = float((out[level] - value).norm() / value.norm())
            assert error < 1e-12, (level, error)
