"""Registry errors, norm policies and stage freezing."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import FrozenBatchNorm2d

from resvision.backbones import create_backbone, list_backbones, register_backbone
from resvision.backbones.registry import _REGISTRY

from .test_weights import _randomize_bn

EXPECTED_NAMES = {
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "resnet18d",
    "resnet34d",
    "resnet50d",
    "resnet101d",
    "resnet152d",
    "iresnet18",
    "iresnet34",
    "iresnet50",
    "iresnet100",
    "iresnet200",
    "resnetv2_50",
    "resnetv2_101",
    "resnetv2_152",
    "resnetv2_50x1_bit",
    "resnetv2_101x1_bit",
    "cifar_resnet20",
    "cifar_resnet32",
    "cifar_resnet44",
    "cifar_resnet56",
    "cifar_resnet110",
    "cifar_resnet1202",
    "cifar_preact_resnet164",
    "cifar_preact_resnet1001",
}


def test_registered_names():
    assert set(list_backbones()) == EXPECTED_NAMES
    assert list_backbones("resnet*d") == [
        "resnet18d",
        "resnet34d",
        "resnet50d",
        "resnet101d",
        "resnet152d",
    ]


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("resnet50", lambda **kw: None)
    assert _REGISTRY["resnet50"].__name__ == "resnet50"


def test_unknown_name_suggests_close_matches():
    with pytest.raises(KeyError, match="resnet50.*resnet50d|resnet50d.*resnet50"):
        create_backbone("resnt50")


def test_bad_arguments_name_the_allowed_values():
    with pytest.raises(ValueError, match=r"c1', 'c2', 'c3', 'c4', 'c5'"):
        create_backbone("resnet18", out_levels=("c2", "p3"))
    with pytest.raises(ValueError, match=r"c2', 'c3', 'c4', 'c5'"):
        create_backbone("iresnet18", out_levels=("c1",))
    with pytest.raises(ValueError, match=r"\(8, 16, 32\)"):
        create_backbone("resnet18", output_stride=4)
    with pytest.raises(ValueError, match=r"\(8, 16\)"):
        create_backbone("iresnet18", output_stride=32)
    with pytest.raises(ValueError, match="frozen_bn"):
        create_backbone("resnet18", norm="group")
    with pytest.raises(ValueError, match="0..5"):
        create_backbone("resnet18", frozen_stages=6)


def _train_step(model: torch.nn.Module) -> None:
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    feats = model(torch.randn(4, 3, 64, 64) * 3 + 1)
    sum(f.square().mean() for f in feats.values()).backward()
    opt.step()


@pytest.mark.parametrize("arch", ["resnet18", "resnet50d", "iresnet18"])
@pytest.mark.parametrize("frozen_stages", [1, 2, 3])
def test_frozen_stages_are_bit_identical_after_training(arch, frozen_stages):
    model = create_backbone(arch, norm="bn", frozen_stages=frozen_stages)
    model.train()  # train() must not undo the freezing
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _train_step(model)
    stages = model.stage_modules()
    names = {id(m): n for n, m in model.named_modules()}
    frozen = tuple(names[id(m)] + "." for mods in stages[:frozen_stages] for m in mods)
    first_trainable = names[id(stages[frozen_stages][0])] + "."
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert not {k for k in changed if k.startswith(frozen)}, "a frozen stage changed"
    # the next stage does train: weights and batch-norm statistics move
    assert any(k.startswith(first_trainable) and "running_mean" in k for k in changed)
    assert any(k.startswith(first_trainable) and k.endswith("weight") for k in changed)


def test_norm_policies():
    frozen = create_backbone("resnet18", norm="frozen_bn")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules())
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    _train_step(frozen)
    for k in before:
        if "bn" in k or "downsample.1" in k:
            assert torch.equal(before[k], frozen.state_dict()[k]), k

    eval_bn = create_backbone("resnet18", norm="eval_bn").train()
    bns = [m for m in eval_bn.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    stats = [m.running_mean.clone() for m in bns]
    weights = [m.weight.detach().clone() for m in bns]
    _train_step(eval_bn)
    assert all(not m.training for m in bns)
    assert all(torch.equal(a, m.running_mean) for a, m in zip(stats, bns))  # statistics fixed
    assert any(not torch.equal(w, m.weight) for w, m in zip(weights, bns))  # affine trains

    sync = create_backbone("resnet18", norm="sync_bn")
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in sync.modules())
    sync.eval()(torch.randn(1, 3, 32, 32))  # runs without a process group in eval


def test_frozen_bn_matches_bn_in_eval():
    """Frozen (folded into the convolutions) and eval-mode batch norms compute the same c5.

    Two float32 computations through 53 layers (folding reassociates the products): 2e-6 of
    c5's largest value apart here (measured with 1 and 2 threads, channels_last and ATen's
    native convolutions), so the bound, relative to that value, keeps 40x of headroom for
    other CPUs' kernels. Non-trivial statistics make the fold matter: the norm's bias dropped
    from the fold puts c5 off by 0.17."""
    bn = create_backbone("resnet50").eval()
    _randomize_bn(bn)
    frozen = create_backbone("resnet50", weights=bn.state_dict(), norm="frozen_bn").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        got, expected = frozen(x)["c5"], bn(x)["c5"]
    error = float((got - expected).abs().max() / expected.abs().max())
    assert error < 1e-4, error


def test_every_registering_module_is_imported_by_the_factory():
    """What registry.py says: each family module registers its names on import and factory.py
    imports them all, so create_backbone sees every family."""
    import ast
    from pathlib import Path

    import resvision.backbones.registry as registry

    folder = Path(registry.__file__).parent
    registering = {
        p.stem
        for p in folder.glob("*.py")
        if p.stem != "registry" and "register_backbone(" in p.read_text()
    }
    assert registering == {"resnet", "preact", "iresnet", "cifar"}
    factory = ast.parse((folder / "factory.py").read_text())
    imported = {
        a.name.rsplit(".", 1)[-1]
        for n in factory.body
        if isinstance(n, ast.Import)
        for a in n.names
        if a.name.startswith("resvision.backbones.")
    }
    assert registering <= imported, registering - imported
    assert "factory.py" in registry.__doc__ and "__init__.py" in registry.__doc__
